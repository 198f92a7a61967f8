"""The Kubernetes code location: every job on k8s_job_executor, GPU pods for the model steps, the Helm values.

Step pods are launched through dagster-k8s's own step handler against a
recording Kubernetes API, so what is checked is the Job body a cluster would get.
"""

from pathlib import Path

import dagster as dg
import pytest
import yaml

pytest.importorskip("dagster_k8s", reason="dagster-k8s is not installed: pip install -c requirements.lock "
                    "dagster-k8s==0.29.27")

from dagster._core.definitions.reconstruct import ReconstructableRepository  # noqa: E402
from dagster._core.execution.api import create_execution_plan  # noqa: E402
from dagster._core.execution.context.system import PlanData, PlanOrchestrationContext  # noqa: E402
from dagster._core.execution.context_creation_job import create_context_free_log_manager  # noqa: E402
from dagster._core.executor.init import InitExecutorContext  # noqa: E402
from dagster._core.executor.step_delegating.step_handler.base import StepHandlerContext  # noqa: E402
from dagster._core.system_config.objects import ResolvedRunConfig  # noqa: E402
from dagster._grpc.types import ExecuteStepArgs  # noqa: E402

from sft_assets.definitions import JOBS  # noqa: E402
from sft_assets.deploy_k8s import GPU_STEPS, build_k8s_defs  # noqa: E402
from sft_assets.settings import Settings  # noqa: E402

MODULE = "sft_assets.deploy_k8s"
VALUES = Path(__file__).parents[2] / "deploy" / "k8s" / "values.yaml"
KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: "https://cluster.invalid"}}]
users: [{name: test, user: {token: test}}]
contexts: [{name: test, context: {cluster: test, user: test, namespace: sft}}]
current-context: test
"""


class RecordingBatchApi:
    """Stands in for the Kubernetes batch API: keeps the Job bodies it is asked to create."""

    def __init__(self):
        self.jobs = []

    def create_namespaced_job(self, body, namespace, **_):
        self.jobs.append(body)


@pytest.fixture(scope="module")
def k8s_instance(tmp_path_factory):
    """An instance whose run launcher is the K8sRunLauncher, pointed at a cluster that is never called."""
    kubeconfig = tmp_path_factory.mktemp("kube") / "config"
    kubeconfig.write_text(KUBECONFIG)
    launcher = {"instance_config_map": "dagster-instance", "dagster_home": "/opt/dagster/dagster_home",
                "postgres_password_secret": "dagster-postgresql-secret", "service_account_name": "dagster",
                "job_image": "sft-assets:test", "load_incluster_config": False, "kubeconfig_file": str(kubeconfig)}
    with dg.instance_for_test(overrides={"run_launcher": {"module": "dagster_k8s", "class": "K8sRunLauncher",
                                                          "config": launcher}}) as instance:
        yield instance


def launch(instance, job_name: str, step: str):
    """The container a cluster would be asked to run for ``step`` of ``job_name``, launched as the executor does."""
    recon_job = ReconstructableRepository.for_module(MODULE, "defs").get_reconstructable_job(job_name)
    job_def = recon_job.get_definition()
    executor_config = ResolvedRunConfig.build(job_def, {}).execution.execution_engine_config
    executor = job_def.executor_def.executor_creation_fn(
        InitExecutorContext(job=recon_job, executor_def=job_def.executor_def, executor_config=executor_config,
                            instance=instance))
    handler = executor._step_handler
    handler._api_client.batch_api = api = RecordingBatchApi()
    run = instance.create_run_for_job(job_def=job_def, job_code_origin=recon_job.get_python_origin())
    plan = create_execution_plan(recon_job)
    plan_context = PlanOrchestrationContext(
        plan_data=PlanData(job=recon_job, dagster_run=run, instance=instance, execution_plan=plan),
        log_manager=create_context_free_log_manager(instance, run), executor=executor, output_capture=None)
    step_key = next(s.key for s in plan.steps if s.op_name == step)
    list(handler.launch_step(StepHandlerContext(
        instance=instance, plan_context=plan_context, steps=plan.steps,
        execute_step_args=ExecuteStepArgs(recon_job.get_python_origin(), run.run_id, [step_key]))))
    (job,) = api.jobs
    return job.spec.template.spec


def test_code_location_loads_with_the_k8s_executor(tmp_path):
    defs = build_k8s_defs(Settings.under(tmp_path))
    dg.Definitions.validate_loadable(defs)
    jobs = defs.resolve_all_job_defs()
    assert set(JOBS) <= {job.name for job in jobs}
    for job in jobs:
        assert job.executor_def.name == "k8s_step_pods", job.name
    ops = {node.name for job in jobs for node in job.graph.node_defs}
    assert set(GPU_STEPS) <= ops  # a renamed asset would silently lose its GPU


@pytest.mark.parametrize(("job_name", "step", "gpus"), [
    ("embed_corpus", "embeddings", "1"),
    ("score_corpus", "ppl_scores", "1"),
    ("score_corpus", "option_probabilities", "1"),
    ("score_corpus", "quality_labels", "1"),
    ("ingest_corpus", "ingest", None),
    ("analyze_pool", "diverse_subset", None),
])
def test_model_steps_get_a_gpu_pod(k8s_instance, job_name, step, gpus):
    pod = launch(k8s_instance, job_name, step)
    assert pod.containers[0].image == "sft-assets:test"  # the run launcher's image, one per step pod
    limits = pod.containers[0].resources.limits or {}
    assert limits.get("nvidia.com/gpu") == gpus
    tolerated = {t.key for t in pod.tolerations or []}
    assert ("nvidia.com/gpu" in tolerated) == bool(gpus)


def test_helm_values_load_this_module():
    values = yaml.safe_load(VALUES.read_text(encoding="utf-8"))
    (deployment,) = values["dagster-user-deployments"]["deployments"]
    args = deployment["dagsterApiGrpcArgs"]
    assert args[args.index("--module-name") + 1] == MODULE
    assert values["runLauncher"]["type"] == "K8sRunLauncher"
    env = {e["name"]: e.get("value") for e in deployment["env"]}
    assert env["SFT_ASSETS_WAREHOUSE"].startswith(("s3://", "gs://"))
