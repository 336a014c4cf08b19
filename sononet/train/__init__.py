"""Training: the config, the profiles, the loop, augmentation and DDP set-up.

``config.TrainConfig`` holds the loop's knobs, ``profiles`` the defaults that differ between the
demo corpus and real speech, ``loop.train_model`` trains one registered model on one split of the
shards and saves it as a self-contained directory. Nothing is imported here, so reading a config
does not load torch.
"""
