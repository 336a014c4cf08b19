"""Training: the loop, augmentation, normalisation and DDP set-up.

``loop.train_model`` trains one registered model on one split of the shards and saves it
as a self-contained directory; ``loop.predict`` scores clips with a trained model.
"""

from sononet.train.loop import TrainConfig, predict, train_model

__all__ = ["TrainConfig", "predict", "train_model"]
