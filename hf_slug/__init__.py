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
    NonFiniteOutputError,
    SLUGError,
    StackError,
    UnknownLayerError,
    UnsupportedModelError,
    UsageError,
)
from .evaluation import CallableEvaluator, Evaluator, ZeroShotEvaluator, ZeroShotTask
from .export import export_peft_lora
from .hosts.base import ComponentRun, Host, HostUnlearning, check_tower, unlearn_on_host
from .hosts.denoiser_criterion import DenoiserCheck, DenoiserEvaluator
from .hosts.diffusion import PipelineOptions, StableDiffusionHost, TextEncoder, unlearn_pipeline
from .hosts.diffusion_criterion import GenerationCheck, GenerationEvaluator
from .hosts.diffusion_export import export_diffusers_lora
from .hosts.generation import (
    DiffusionEvaluator,
    DiffusionScoring,
    ForgetGeneration,
    GenerationSettings,
)
from .hosts.vlm import LlavaHost, VLMOptions, VLMUnlearning, unlearn_vlm
from .hosts.vlm_evaluation import AskSettings, VLMIdentityEvaluator
from .hub import push_to_hub
from .model import SLUGModel
from .names import validate_adapter_name
from .options import GradientOptions, SearchSettings, UnlearnOptions
from .request import ConceptRequest
from .stacking import StackRequest, unlearn_stack
from .unlearn import UnlearningResult, unlearn
from .version import __version__

__all__ = [
    "AskSettings",
    "ComponentRun",
    "DiffusionScoring",
    "ForgetGeneration",
    "GenerationSettings",
    "Host",
    "HostUnlearning",
    "LlavaHost",
    "PipelineOptions",
    "StableDiffusionHost",
    "TextEncoder",
    "VLMOptions",
    "check_tower",
    "unlearn_on_host",
    "ConceptRequest",
    "GenerationCheck",
    "GenerationEvaluator",
    "DenoiserCheck",
    "DenoiserEvaluator",
    "GradientOptions",
    "SearchSettings",
    "StackRequest",
    "UnlearnOptions",
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
    "NonFiniteOutputError",
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
