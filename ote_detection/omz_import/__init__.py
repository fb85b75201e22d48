"""Import of Open Model Zoo IR weights into our PyTorch models: reading the IR graph (``ir_graph``),
mapping its convolutions onto an SSD detector (``ssd_mapping``) and the import in steps, with BatchNorm
calibration (``importer``). The entry point with a template file is ``apis/import_weights.py``."""
