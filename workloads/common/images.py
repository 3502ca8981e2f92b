"""Image helpers: payload parsing, nested-list output, PNG grids. numpy/PIL only."""
from __future__ import annotations

import base64
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from trainyard.errors import SpecError

MAX_SAMPLES = 256


def images_from_payload(payload: Any, *, field: str = "inputs", scale_default: float = 16.0) -> np.ndarray:
    """Parse `payload[field]` into float32 images (N, 1, 8, 8) in [0, 1].

    Accepts one 8x8 image, a list of them, or rows of 64 pixels; pixel values are divided
    by `payload["scale"]` (default 16, sklearn's digits range).
    """
    if not isinstance(payload, dict) or field not in payload:
        raise SpecError(f"the request needs an {field!r} field", field=field, value=None,
                        fix=f"send {{\"{field}\": [[...8 rows of 8 pixels in 0..16...]]}} (one or more images)")
    try:
        arr = np.asarray(payload[field], dtype=np.float32)
    except (TypeError, ValueError):
        raise SpecError("must be numbers", field=field, value="<non-numeric>",
                        fix="send nested lists of numbers") from None
    if arr.ndim == 2 and arr.shape == (8, 8):
        arr = arr[None]
    if arr.ndim == 1 and arr.shape[0] == 64:
        arr = arr[None]
    if arr.ndim == 2 and arr.shape[1] == 64:
        arr = arr.reshape(-1, 8, 8)
    if arr.ndim == 4 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 3 or arr.shape[1:] != (8, 8) or arr.shape[0] == 0:
        raise SpecError(f"must have shape (N, 8, 8) or (N, 64), got {tuple(arr.shape)}",
                        field=field, value=list(arr.shape), fix="send one or more 8x8 images")
    if arr.shape[0] > MAX_SAMPLES:
        raise SpecError(f"at most {MAX_SAMPLES} images per request, got {arr.shape[0]}", field=field,
                        value=int(arr.shape[0]), fix="split the request")
    if not np.isfinite(arr).all():
        raise SpecError("must be finite numbers", field=field, value="<nan/inf>", fix="send finite pixel values")
    scale = payload.get("scale", scale_default)
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or scale <= 0:
        raise SpecError(f"must be a positive number, got {scale!r}", field="scale", value=scale,
                        fix="send the pixel range, e.g. 16 for sklearn digits or 1 for [0, 1] images")
    return arr[:, None, :, :] / float(scale)


def int_field(payload: Any, name: str, *, default: int, lo: int, hi: int) -> int:
    if not isinstance(payload, dict):
        raise SpecError(f"the request must be a JSON object, got {type(payload).__name__}", field=name,
                        value=None, fix=f"send {{\"{name}\": {default}}}")
    value = payload.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise SpecError(f"must be an integer in [{lo}, {hi}], got {value!r}", field=name, value=value,
                        fix=f"send e.g. {{\"{name}\": {default}}}")
    return value


def float_field(payload: dict, name: str, *, default: float, lo: float, hi: float) -> float:
    value = payload.get(name, default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not lo <= value <= hi:
        raise SpecError(f"must be a number in [{lo}, {hi}], got {value!r}", field=name, value=value,
                        fix=f"send e.g. {{\"{name}\": {default}}}")
    return float(value)


def bool_field(payload: dict, name: str, *, default: bool = False) -> bool:
    value = payload.get(name, default)
    if not isinstance(value, bool):
        raise SpecError(f"must be true or false, got {value!r}", field=name, value=value,
                        fix=f"send {{\"{name}\": true}}")
    return value


def check_keys(payload: Any, allowed: tuple[str, ...]) -> None:
    from trainyard.errors import did_you_mean

    if not isinstance(payload, dict):
        raise SpecError(f"the request must be a JSON object, got {type(payload).__name__}", field="",
                        value=None, fix=f"send an object with keys among: {', '.join(allowed)}")
    for key in payload:
        if key not in allowed:
            raise SpecError(f"unknown key;{did_you_mean(key, allowed) or ''} allowed: {', '.join(allowed)}",
                            field=str(key), value=payload[key], fix=f"use only {', '.join(allowed)}")


def grid(images: np.ndarray, *, ncol: int | None = None, pad: int = 1, upscale: int = 6) -> np.ndarray:
    """(N, 1, H, W) or (N, H, W) in [0, 1] -> one uint8 (rows, cols) grid image."""
    imgs = np.asarray(images, dtype=np.float32)
    if imgs.ndim == 4:
        imgs = imgs[:, 0]
    n, h, w = imgs.shape
    ncol = ncol or int(math.ceil(math.sqrt(n)))
    nrow = int(math.ceil(n / ncol))
    out = np.ones((nrow * (h + pad) + pad, ncol * (w + pad) + pad), dtype=np.float32)
    for i in range(n):
        r, c = divmod(i, ncol)
        out[pad + r * (h + pad): pad + r * (h + pad) + h, pad + c * (w + pad): pad + c * (w + pad) + w] = imgs[i]
    out = np.clip(out, 0.0, 1.0)
    out = np.kron(out, np.ones((upscale, upscale), dtype=np.float32))
    return (255 * (1.0 - out)).astype(np.uint8)  # dark ink on white, like the digits


def png_bytes(images: np.ndarray, **kw) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(grid(images, **kw), mode="L").save(buf, format="PNG")
    return buf.getvalue()


def png_base64(images: np.ndarray, **kw) -> str:
    return base64.b64encode(png_bytes(images, **kw)).decode("ascii")


def save_png(images: np.ndarray, path: str | Path, **kw) -> str:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png_bytes(images, **kw))
    return str(path)


def images_response(images: np.ndarray, *, key: str, png: bool, decimals: int = 4) -> dict:
    """Images (N, 1, 8, 8) in [0, 1] -> {key: nested lists (N, 8, 8)[, "png": base64]}."""
    arr = np.clip(np.asarray(images, dtype=np.float32), 0.0, 1.0)[:, 0]
    body: dict[str, Any] = {key: np.round(arr, decimals).tolist()}
    if png:
        body["png"] = png_base64(arr[:, None])
    return body


IMAGES_SCHEMA = {"type": "array", "description": "Images (N, 8, 8), pixel values in [0, 1]",
                 "items": {"type": "array", "items": {"type": "array", "items": {"type": "number"}}}}
PNG_SCHEMA = {"type": "string", "description": "base64 PNG grid of the images (when png: true)"}


def scaled_images_merge(arrays, hparams) -> dict:
    """A batch adapter's merge for images already divided by their own request's scale."""
    return {"inputs": np.concatenate(arrays, axis=0).reshape(-1, 8, 8), "scale": 1.0}
