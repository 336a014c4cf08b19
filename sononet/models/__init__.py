"""Emotion classifiers: CNN and BiGRU over log-mel, a pretrained speech encoder over waveforms.

Build by name through the registry, save and reload through ``saving``::

    from sononet.models import build_model, load_model, save_model
    model = build_model("cnn", n_classes=6)
    logits, loss = model(mel, lengths, labels)
"""

from sononet.models.registry import MODELS as MODELS
from sononet.models.registry import ModelSpec as ModelSpec
from sononet.models.registry import build_model as build_model
from sononet.models.registry import get_spec as get_spec
from sononet.models.registry import make_config as make_config
from sononet.models.registry import model_names as model_names
from sononet.models.saving import load_model as load_model
from sononet.models.saving import save_model as save_model
