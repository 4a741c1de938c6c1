"""hf_slug: targeted unlearning for Hugging Face models with SLUG (Single Layer Unlearning Gradient).

Example:
    >>> from hf_slug import SLUGConfig, unlearn, ConceptDelta
"""

from .config import SLUGConfig, UnlearningConfig
from .data import ImageTextPairs, load_pairs
from .delta import ConceptDelta
from .errors import (
    AdapterError,
    AdapterNameError,
    ConfigError,
    DataFormatError,
    DeltaFormatError,
    EmptyDatasetError,
    FingerprintMismatchError,
    HubError,
    MissingCaptionError,
    NonFiniteGradientError,
    SLUGError,
    StackError,
    UnknownLayerError,
    UnsupportedModelError,
    UsageError,
)
from .evaluation import CallableEvaluator, Evaluator, ZeroShotEvaluator, ZeroShotTask
from .export import export_peft_lora
from .families.diffusion import DiffusionEvaluator, export_diffusers_lora, unlearn_pipeline
from .families.vlm import VLMIdentityEvaluator, VLMUnlearning, unlearn_vlm
from .hub import push_to_hub
from .model import SLUGModel
from .names import validate_adapter_name
from .stacking import StackRequest, unlearn_stack
from .unlearn import UnlearningResult, unlearn
from .version import __version__

__all__ = [
    "StackRequest",
    "unlearn_stack",
    "__version__",
    "AdapterError",
    "AdapterNameError",
    "ConfigError",
    "DataFormatError",
    "CallableEvaluator",
    "ConceptDelta",
    "DiffusionEvaluator",
    "DeltaFormatError",
    "EmptyDatasetError",
    "Evaluator",
    "FingerprintMismatchError",
    "HubError",
    "ImageTextPairs",
    "MissingCaptionError",
    "NonFiniteGradientError",
    "SLUGConfig",
    "SLUGError",
    "SLUGModel",
    "StackError",
    "UnknownLayerError",
    "UnlearningConfig",
    "UnlearningResult",
    "UnsupportedModelError",
    "UsageError",
    "VLMIdentityEvaluator",
    "VLMUnlearning",
    "ZeroShotEvaluator",
    "ZeroShotTask",
    "export_diffusers_lora",
    "export_peft_lora",
    "load_pairs",
    "push_to_hub",
    "unlearn",
    "unlearn_pipeline",
    "unlearn_vlm",
    "validate_adapter_name",
]
