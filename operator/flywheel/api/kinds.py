"""The four Flywheel kinds: names, models and how `kubectl get` shows them."""

from __future__ import annotations

from dataclasses import dataclass

from .common import GROUP, VERSION, Model, ResourceStatus
from .dataset import DatasetSpec, DatasetStatus
from .inferenceservice import InferenceServiceSpec, InferenceServiceStatus
from .modelversion import ModelVersionSpec, ModelVersionStatus
from .trainingrun import TrainingRunSpec, TrainingRunStatus

CATEGORY = "flywheel"


@dataclass(frozen=True)
class PrinterColumn:
    name: str
    json_path: str
    type: str = "string"
    priority: int = 0
    description: str = ""


READY = PrinterColumn(
    "Ready", '.status.conditions[?(@.type=="Ready")].status', description="Ready condition."
)
PHASE = PrinterColumn("Phase", ".status.phase", description="Phase.")
AGE = PrinterColumn("Age", ".metadata.creationTimestamp", "date")
REASON = PrinterColumn(
    "Reason",
    '.status.conditions[?(@.type=="Ready")].reason',
    priority=1,
    description="Why Ready is what it is.",
)


@dataclass(frozen=True)
class Kind:
    kind: str
    plural: str
    short_names: tuple[str, ...]
    spec: type[Model]
    status: type[ResourceStatus]
    description: str
    columns: tuple[PrinterColumn, ...]
    # Children are named after the object (`<name>-canary`, Job pod names, ...),
    # so names are kept short enough for every child to be a valid DNS label.
    max_name_length: int = 52

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{VERSION}"

    @property
    def crd_name(self) -> str:
        return f"{self.plural}.{GROUP}"


DATASET = Kind(
    kind="Dataset",
    plural="datasets",
    short_names=("fwds",),
    spec=DatasetSpec,
    status=DatasetStatus,
    description=(
        "A Dataset says where training data lives, what it must look like, and is "
        "versioned by the content hash of its snapshot."
    ),
    columns=(
        PHASE,
        READY,
        PrinterColumn("Version", ".status.version", description="Content hash."),
        PrinterColumn("Rows", ".status.rows", "integer", description="Rows."),
        REASON,
        AGE,
    ),
)

TRAINING_RUN = Kind(
    kind="TrainingRun",
    plural="trainingruns",
    short_names=("fwtr",),
    spec=TrainingRunSpec,
    status=TrainingRunStatus,
    description=(
        "A TrainingRun trains a model on a Dataset version in a Job, tracks it in MLflow "
        "and, when its gates pass, creates a ModelVersion."
    ),
    columns=(
        PHASE,
        READY,
        PrinterColumn("Dataset", ".spec.datasetRef.name", description="Dataset."),
        PrinterColumn("Model", ".status.modelVersion", description="ModelVersion created."),
        PrinterColumn("Run", ".status.mlflowRunId", priority=1, description="MLflow run."),
        REASON,
        AGE,
    ),
)

MODEL_VERSION = Kind(
    kind="ModelVersion",
    plural="modelversions",
    short_names=("fwmv",),
    spec=ModelVersionSpec,
    status=ModelVersionStatus,
    description=(
        "A ModelVersion is one version of a registered model, kept in step with the MLflow "
        "registry, with its lineage and approval."
    ),
    columns=(
        PrinterColumn("Model", ".spec.modelName", description="Registered model."),
        PrinterColumn("Version", ".status.registryVersion", description="Registry version."),
        PHASE,
        READY,
        PrinterColumn("Servable", ".status.servable", "boolean", description="May be served."),
        REASON,
        AGE,
    ),
    max_name_length=63,
)

INFERENCE_SERVICE = Kind(
    kind="InferenceService",
    plural="inferenceservices",
    short_names=("fwis",),
    spec=InferenceServiceSpec,
    status=InferenceServiceStatus,
    description=(
        "An InferenceService serves a stable ModelVersion, rolls out a canary by live "
        "metrics, checks for drift on a schedule and retrains when the policy allows."
    ),
    columns=(
        PHASE,
        READY,
        PrinterColumn("Serving", ".status.servingModelVersion", description="Stable model."),
        PrinterColumn("Canary", ".status.canary.modelVersion", description="Canary model."),
        PrinterColumn("Canary%", ".status.traffic.canary", "integer", description="Canary share."),
        PrinterColumn("Drift", ".status.drift.result", description="Last drift check."),
        PrinterColumn("URL", ".status.url", priority=1, description="Where to call it."),
        REASON,
        AGE,
    ),
    # The name becomes Services (DNS-1035 labels) and a CronJob (52 characters,
    # of which the drift suffix takes some).
    max_name_length=40,
)

KINDS: tuple[Kind, ...] = (DATASET, TRAINING_RUN, MODEL_VERSION, INFERENCE_SERVICE)
BY_KIND = {k.kind: k for k in KINDS}
BY_PLURAL = {k.plural: k for k in KINDS}
