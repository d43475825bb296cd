"""``m3net predict``: classify query clips against a folder of labelled support clips.

A thin wrapper over ``m3net.FewShotClassifier`` (m3net/api.py): the checkpoint's head with the backbone,
sampling and transform its cache was built with, fitted on the support folder, asked for each query.
"""
from m3net.api import FewShotClassifier, check_exist
from m3net.config import RunSettings, setting, settings
from m3net.train.features import InputNormSettings


@settings
class PredictConfig(InputNormSettings, RunSettings):
    checkpoint: str = setting(help="Trained head (best.pt of `m3net train-head` or `m3net finetune`).", path="file")
    support: str = setting(help="Folder of <class>/<clip>: the same number (1-5) of labelled clips per class.",
                           path="dir")
    queries: tuple = setting(help="Clips to classify: video files or frame folders.", path="any", option="--query")
    weights: str = setting("", "Backbone weights if not where the checkpoint's cache found them (checked by "
                           "sha256); default: what the checkpoint's cache was built with.")
    batch_size: int = setting(0, "Clips per backbone forward, a short batch padded; 0: the checkpoint's cache's, so "
                              "a clip's features equal its cache row bit for bit (1: fastest for a single query).",
                              minimum=0)

    def __post_init__(self):
        self.queries = tuple(self.queries)
        super().__post_init__()


def predict(config):
    """[{query, predicted, probabilities {class: p}, most likely first}] for every query clip."""
    check_exist(config.queries)  # before the support set is extracted
    classifier = FewShotClassifier.from_checkpoint(config.checkpoint, weights=config.weights or None,
                                                   device=config.device, batch_size=config.batch_size or None,
                                                   input_norm=config.input_norm, progress=True)
    predictions = classifier.fit(config.support).predict(config.queries)
    return [{"query": p.query, "predicted": p.label, "probabilities": p.probabilities} for p in predictions]
