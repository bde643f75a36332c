"""Export a trained classifier to ONNX and check onnxruntime against PyTorch.

    leuk-lightning export ckpt_path=<run>/checkpoints/epoch_004.ckpt format=onnx \
        [output=<run>/model.onnx] [tta=null|rot8|d4] [opset=18; 20 with tta=rot8] [atol=1e-4]

The exported graph is :class:`leuk_lightning.inference.predict.InferenceModel`: input
``image``, float32 ``[batch, 3, S, S]`` in [0, 1] at the run's ``data.image_size`` S (dynamic
batch), then the eval centre crop, the run's normalisation, the network (optionally with TTA)
and the probabilities; output ``probabilities`` ``[batch, K]`` (K = number of classes, class
order in the sidecar ``<output>.json`` with the preprocessing). After writing, a random batch
goes through onnxruntime and PyTorch; the export fails unless they agree within ``atol``.
"""

from __future__ import annotations

import logging
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from leuk_lightning.errors import ConfigError, DataError
from leuk_lightning.inference.predict import LoadedClassifier
from leuk_lightning.utils.io import atomic_write, atomic_write_json

log = logging.getLogger(__name__)


EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


def require_export_packages() -> None:
    """ONNX export needs the ``export`` extra; say how to install it instead of a traceback."""
    import importlib.util

    missing = [m for m in EXPORT_PACKAGES if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"ONNX export needs {', '.join(missing)}, which are not installed: "
            'pip install "leuk-lightning[export]" (or: pip install onnx onnxscript onnxruntime)'
        )


def export_onnx(
    classifier: LoadedClassifier,
    output: str | Path,
    tta: str | None = None,
    opset: int | None = None,
    atol: float = 1e-4,
    check_batch: int = 4,
) -> dict[str, Any]:
    """Write the ONNX model (atomically) and its sidecar JSON; returns the check's numbers."""
    require_export_packages()
    import onnxruntime as ort

    if classifier.image_size is None:
        raise ConfigError("the run has no fixed data.image_size; ONNX export needs one")
    model = classifier.inference_model(tta).cpu()
    if opset is None:  # rot8 resamples with affine_grid, an ONNX operator since opset 20
        opset = 20 if tta == "rot8" else 18
    size = int(classifier.image_size)
    example = torch.rand(2, 3, size, size)
    out = Path(output)
    with tempfile.TemporaryDirectory() as tmp:
        tmp_file = Path(tmp) / "model.onnx"
        with warnings.catch_warnings():  # the legacy (TorchScript) exporter's notices
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                (example,),
                str(tmp_file),
                input_names=["image"],
                output_names=["probabilities"],
                dynamic_axes={"image": {0: "batch"}, "probabilities": {0: "batch"}},
                opset_version=opset,
                dynamo=False,
            )
        data = tmp_file.read_bytes()
    atomic_write(out, lambda fh: fh.write(data))
    generator = torch.Generator().manual_seed(0)
    batch = torch.rand(check_batch, 3, size, size, generator=generator)
    with torch.inference_mode():
        expected = model(batch).numpy()
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"image": batch.numpy()})[0]
    max_diff = float(np.abs(got - expected).max())
    if not np.allclose(got, expected, atol=atol, rtol=0):
        raise DataError(
            f"ONNX export {out}: onnxruntime differs from PyTorch by {max_diff:.3g} (> atol={atol})"
        )
    info = {
        "model": str(out),
        "input": {"name": "image", "shape": ["batch", 3, size, size], "range": [0.0, 1.0]},
        "output": {"name": "probabilities", "classes": classifier.class_names},
        "preprocessing_in_graph": {
            "center_crop": classifier.crop,
            "center_crop_fraction": classifier.crop_fraction,
            "mean": classifier.mean,
            "std": classifier.std,
        },
        "resize_before": f"square resize to {size} px (antialiased), RGB",
        "tta": tta,
        "opset": opset,
        "check": {"batch": check_batch, "max_abs_diff": max_diff, "atol": atol},
    }
    atomic_write_json(out.with_suffix(out.suffix + ".json"), info)
    return info
