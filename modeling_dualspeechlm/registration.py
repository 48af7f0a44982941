"""Auto-class registration shared by the model files (imported relatively, so it travels with them)."""

from transformers import AutoConfig, AutoModel, AutoProcessor
from transformers.models.auto.configuration_auto import CONFIG_MAPPING


def register_config(config_class) -> bool:
    """Register `config_class` with AutoConfig and mark it to be saved with its code. A config file also runs a
    second time, as remote code from a saved folder (under another module name): the class registered first keeps
    the model type. Returns whether `config_class` is the one registered."""
    config_class.register_for_auto_class()
    if config_class.model_type not in CONFIG_MAPPING:
        AutoConfig.register(config_class.model_type, config_class)
    return CONFIG_MAPPING[config_class.model_type] is config_class


def register_auto_classes(config_class, model_class, auto_class=AutoModel) -> None:
    """Register `config_class` / `model_class` with AutoConfig / `auto_class`, and mark both to be saved with their
    code for `trust_remote_code=True` (see `register_config`)."""
    model_class.register_for_auto_class(auto_class.__name__)
    if register_config(config_class):
        auto_class.register(config_class, model_class, exist_ok=True)


def register_processor(config_class, processor_class) -> None:
    """Register `processor_class` with AutoProcessor for `config_class` and mark it to be saved with its code. Running
    again as remote code registers the remote classes under their own config class, so no clash is possible."""
    processor_class.register_for_auto_class()
    AutoProcessor.register(config_class, processor_class)
