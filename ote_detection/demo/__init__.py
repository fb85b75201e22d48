"""The demo (work dir ``visualize.py``): frames in (``frames.py``: camera, video, image or folder sources, and the
video, image or folder sinks), detection with the frame runners (``runners.py``: sync, tiled, OpenVINO async) over a
predictor of ``inference/``, drawing (``drawing.py``) and the app that ties them (``app.py``: ``run_demo``,
``run_frames``). Below apis/ (``apis/visualize.py`` is the entry point with a template file); imports inference/,
data/ and utils/; OpenCV at import, OpenVINO lazily."""
