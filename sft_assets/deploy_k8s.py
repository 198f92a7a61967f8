"""The code location on Kubernetes: each step of a run in its own pod, GPU pods for the model steps.

The same assets, jobs, sensor and resources as ``sft_assets.definitions``,
with ``k8s_job_executor`` as the executor of every job. A partitioned job runs
once per corpus file, so a backfill over the ``corpus`` partitions fans out
into one pod per (file, step). The steps that run a neural model get a GPU
through ``per_step_k8s_config``, so the asset definitions stay free of
Kubernetes settings. Needs ``dagster-k8s``; see ``deploy/k8s/README.md``.

    dagster api grpc -m sft_assets.deploy_k8s   # what deploy/k8s/values.yaml runs
"""

import dagster as dg
from dagster_k8s import k8s_job_executor

from sft_assets.definitions import build_defs
from sft_assets.settings import Settings

# The steps (op names) that run a neural model over a whole file or round: MiniLM on the prompts (embeddings)
# and on the answers (quality_labels), the causal LM for PPL, option letters and self-instruct generation.
# The pool-wide steps that embed (curated_reference, quality_model) see a few thousand texts: CPU nodes.
GPU_STEPS = ("embeddings", "quality_labels", "ppl_scores", "option_probabilities", "generated_instructions")
GPU_POD = {
    "container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}}},
    # GPU node pools are usually tainted so that only pods asking for a GPU land on them.
    "pod_spec_config": {"tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]},
}


def k8s_executor() -> dg.ExecutorDefinition:
    """``k8s_job_executor`` with a GPU for each of ``GPU_STEPS``; every other setting comes from the run launcher."""
    return k8s_job_executor.configured({"per_step_k8s_config": {step: GPU_POD for step in GPU_STEPS}},
                                       name="k8s_step_pods")


def build_k8s_defs(settings: Settings) -> dg.Definitions:
    return dg.Definitions.merge(build_defs(settings), dg.Definitions(executor=k8s_executor()))


defs = build_k8s_defs(Settings.from_env())
