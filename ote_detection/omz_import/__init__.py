"""Import of Open Model Zoo IR weights into our PyTorch models: reading the IR graph (``ir_graph``) and
mapping its convolutions onto an SSD detector (``ssd_mapping``). The orchestration, with BatchNorm
calibration, is ``apis/import_weights.py``."""
