# Runtime: the training loss and learning rate are logged every `interval` iterations (and to TensorBoard
# with --tensorboard-dir). Checkpoints are written after every epoch, validation runs after every epoch when
# --val-ann-files is given.

log_config = dict(interval=10)
