"""The raw-folder sensor: files in, partitions, content hashes and runs out."""


import hashlib
import json

import dagster as dg

from sft_assets.core.rawfiles import diff_scan
from sft_assets.defs.ingest import observe_raw_file, observed_version
from sft_assets.defs.partitions import corpus_partitions
from sft_assets.defs.resources import RawRoot, WarehouseResource


def build_raw_files_sensor(job, pool_job, minimum_interval_seconds: int) -> dg.SensorDefinition:
    @dg.sensor(
        name="raw_files_sensor",
        jobs=[job, pool_job],
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Adds a partition per new file under the raw root and ingests it; records each file's "
        "content hash as the data version of its raw_files partition and re-ingests a file whose hash changed; "
        "drops the partition and its rows when a file is deleted and rebuilds the pool without them. "
        "Links that leave the root are refused.",
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
            dg.RunRequest(partition_key=key, run_key=f"{key}@{changes.state[key][2]}", job_name=job.name)
            for key in changes.added + changes.changed
        ]
        if gone := [k for k in changes.removed if k in existing]:
            # a deletion leaves no event for the automation to react to: the pool is rebuilt without the file
            requests.append(dg.RunRequest(run_key=f"removed:{','.join(gone)}@{scan_stamp(changes.state)}",
                                          job_name=pool_job.name))
        # the first tick checks every file's recorded hash (files ingested by `sft-assets run` have one)
        hashed = sorted(changes.state) if not context.cursor else changes.added + changes.changed
        observations = [observe_raw_file(key, changes.state[key][2]) for key in hashed
                        if observed_version(context.instance, key) != changes.state[key][2]]
        partition_requests = []
        if new := [k for k in changes.added if k not in existing]:
            partition_requests.append(corpus_partitions.build_add_request(new))
        if gone:
            partition_requests.append(corpus_partitions.build_delete_request(gone))
        return dg.SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=partition_requests,
            asset_events=observations,
            cursor=json.dumps(changes.state, sort_keys=True),
        )

    return raw_files_sensor


def scan_stamp(state: dict[str, list]) -> str:
    """A short fingerprint of the folder's state: the same deletion seen twice requests one rebuild."""
    return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()[:16]
