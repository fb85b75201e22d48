"""The artefacts ote-face reads and writes, each with one typed reader and writer: ``kinds.open_artefact``
(what a path is: checkpoint, IR, ONNX model, export folder; read once), ``checkpoint`` (load, save, a run's
checkpoint folder, the run identity and --resume), ``formats`` (CheckpointMeta, ExportInfo and
export_info.yaml, the one IR check and the IR set checksums), ``input_size`` (InputSize) and ``provenance``."""
