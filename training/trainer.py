"""The one Trainer hook the recipes need: log each loss term the model returns beside the total."""

from __future__ import annotations

from collections import defaultdict

from transformers import Trainer


class LossTermsTrainer(Trainer):
    """A `Trainer` that also logs every `*_loss` field of the model output (e.g. the USTokenizer's
    commitment / reconstruction / understanding terms), averaged over the steps since the last log."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._loss_terms = defaultdict(list)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        outputs = model(**inputs)
        if model.training:
            for name, value in outputs.items():
                if name.endswith("_loss") and value is not None:
                    self._loss_terms[name].append(value.detach().float().item())
        return (outputs["loss"], outputs) if return_outputs else outputs["loss"]

    def log(self, logs: dict, *args, **kwargs) -> None:
        if "loss" in logs and self._loss_terms:
            logs.update({name: round(sum(values) / len(values), 6) for name, values in self._loss_terms.items()})
            self._loss_terms.clear()
        super().log(logs, *args, **kwargs)


__all__ = ["LossTermsTrainer"]
