"""Auto-class registration shared by the model files (imported relatively, so it travels with them)."""

from transformers import AutoConfig, AutoModel, AutoProcessor


def register_auto_classes(config_class, model_class, auto_class=AutoModel) -> None:
    """Register `config_class` / `model_class` with AutoConfig / `auto_class`, and mark both to be
    saved with their code for `trust_remote_code=True`. A model file also runs a second time, as
    remote code from a saved folder (under another module name): the classes registered first keep
    the model type."""
    config_class.register_for_auto_class()
    model_class.register_for_auto_class(auto_class.__name__)
    try:
        AutoConfig.register(config_class.model_type, config_class)
    except ValueError:
        return
    auto_class.register(config_class, model_class)


def register_processor(config_class, processor_class) -> None:
    """Register `processor_class` with AutoProcessor for `config_class` and mark it to be saved with its code. Running
    again as remote code registers the remote classes under their own config class, so no clash is possible."""
    processor_class.register_for_auto_class()
    AutoProcessor.register(config_class, processor_class)
