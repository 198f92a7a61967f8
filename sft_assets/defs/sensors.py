"""The raw-folder sensor: files in, partitions and runs out."""


import json

import dagster as dg

from sft_assets.core.rawfiles import diff_scan
from sft_assets.defs.partitions import corpus_partitions
from sft_assets.defs.resources import RawRoot, WarehouseResource


def build_raw_files_sensor(job, minimum_interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="raw_files_sensor",
        job=job,
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds a partition per new file under the raw root and ingests it; "
        "re-ingests a file whose content hash changed; drops the partition and its "
        "rows when a file is deleted. Links that leave the root are refused.",
    )
    def raw_files_sensor(context: dg.SensorEvaluationContext, raw_root: RawRoot, warehouse: WarehouseResource):
        previous = json.loads(context.cursor) if context.cursor else {}
        scan = raw_root.scan()
        for relpath, why in scan.refused.items():
            context.log.warning(f"refused {relpath}: {why}")
        changes = diff_scan(previous, scan)
        store = warehouse.warehouse()
        existing = set(context.instance.get_dynamic_partitions(corpus_partitions.name))
        if not context.cursor:  # first tick: what is registered and stored already is current
            changes.added = [k for k in changes.added if not (k in existing and store.exists("raw_records", k))]
        changes.removed = sorted(set(changes.removed) | (existing - set(scan.files)))
        for key in changes.removed:
            store.delete_partition(key)
        if changes.removed:
            warehouse.refresh_catalog()
        requests = [
            dg.RunRequest(partition_key=key, run_key=f"{key}@{changes.state[key][2]}")
            for key in changes.added + changes.changed
        ]
        partition_requests = []
        if new := [k for k in changes.added if k not in existing]:
            partition_requests.append(corpus_partitions.build_add_request(new))
        if gone := [k for k in changes.removed if k in existing]:
            partition_requests.append(corpus_partitions.build_delete_request(gone))
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=partition_requests,
            cursor=json.dumps(changes.state, sort_keys=True),
        )

    return raw_files_sensor
