"""Using trained checkpoints: classify images (``predict``), export to ONNX (``export``), detect
cells in images, videos and camera streams (``detect``)."""
