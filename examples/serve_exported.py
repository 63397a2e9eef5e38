"""Serve a file of ``splitattn export`` (fp32 or ``--int8``) with NumPy, Pillow and ONNX Runtime or OpenVINO only.

No torch and no splitattn: copy this file to the serving machine with the exported model, then

    pip install numpy pillow onnxruntime   # ONNX files
    pip install numpy pillow openvino      # OpenVINO IR (.xml + .bin), or ONNX files read by OpenVINO
    python serve_exported.py MODEL.onnx|MODEL.xml IMAGE [IMAGE ...]

Everything the model needs around it is read from the file's metadata (JSON values; ONNX ``metadata_props``,
OpenVINO ``rt_info`` section ``splitattn``): the task, the class names, the preprocessing and the thresholds.
It prints, per image, a classifier's top 3 classes, a detector's objects (class, score, box in pixels) or a
segmenter's label map as the share of pixels of each class. ``splitattn predict --exported FILE`` prints the
same from the same file (tests/test_deploy_readme.py checks it).
"""

import json
import sys

import numpy as np
from PIL import Image


def load(path):
    """``(run, metadata)``: ``run(array) -> [outputs]`` in the runtime of the file's format."""
    if path.endswith(".xml"):  # OpenVINO IR
        import openvino as ov

        core = ov.Core()
        model = core.read_model(path)
        section = model.get_rt_info(["splitattn"]).astype(dict)
        metadata = {key: json.loads(value.astype(str)) for key, value in section.items()}
        compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        return (lambda x: [np.array(out) for out in compiled(x).to_tuple()]), metadata
    import onnxruntime as ort

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    metadata = {key: json.loads(value) for key, value in session.get_modelmeta().custom_metadata_map.items()}
    name = session.get_inputs()[0].name
    return (lambda x: session.run(None, {name: x})), metadata


def normalise(image, mean, std):
    """(1, C, H, W) float32 of a PIL image: values / 255, minus mean, over std, per channel."""
    pixels = np.asarray(image, np.float32).reshape(image.height, image.width, -1) / 255
    return ((pixels - np.float32(mean)) / np.float32(std)).transpose(2, 0, 1)[None]


def classify(run, meta, image):
    """Top 3 ``(class, probability)``: resize and crop as the run evaluated (``eval_config``), normalise."""
    p, size = meta["eval_config"], meta["eval_config"]["input_size"]
    resample = Image.Resampling[p["interpolation"].upper()]
    w, h = image.size
    if p["crop_mode"] == "crop_resize":  # the official weights' protocol: crop, then resize
        crop = p["crop_pct"] * min(w, h)
        left, top = round((w - crop) / 2), round((h - crop) / 2)
        image = image.crop((left, top, round(left + crop), round(top + crop))).resize((size, size), resample)
    else:  # timm's (a training run's): short side to size / crop_pct, centre crop
        short = int(size / p["crop_pct"])
        new = (short, int(short * h / w)) if w <= h else (int(short * w / h), short)
        left, top = round((new[0] - size) / 2), round((new[1] - size) / 2)
        image = image.resize(new, resample).crop((left, top, left + size, top + size))
    logits = run(normalise(image, p["mean"], p["std"]))[0][0]
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    return [(meta["classes"][i], float(probs[i])) for i in probs.argsort()[::-1][:3]]


def detect(run, meta, image):
    """``(class, score, [x0, y0, x1, y1])`` of each object scoring at least the stored ``score_threshold``; the
    file resizes and normalises inside, it takes one (3, H, W) RGB image in 0..1."""
    outputs = dict(zip(meta["output_names"], run(np.asarray(image, np.float32).transpose(2, 0, 1) / 255)))
    keep = outputs["scores"] >= meta["score_threshold"]
    return [
        (meta["classes"][label], float(score), [round(float(value), 1) for value in box])
        for label, score, box in zip(outputs["labels"][keep], outputs["scores"][keep], outputs["boxes"][keep])
    ]


def segment(run, meta, image):
    """(H, W) class ids: the long side resized to the stored ``base_size``, one pass, the label map resized back."""
    p = meta["preprocessing"]
    w, h = image.size
    scale = p["base_size"] / max(w, h)
    small = image.resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR)
    labels = run(normalise(small, p["mean"], p["std"]))[0][0].argmax(0).astype(np.uint8)
    return np.asarray(Image.fromarray(labels).resize((w, h), Image.Resampling.NEAREST))


def main(path, images):
    run, meta = load(path)
    int8 = meta.get("int8")
    if int8:
        print(f"{path}: int8, {int8['metric']} {int8['fp32']:.2f} -> {int8['int8']:.2f} against fp32")
    for name in images:
        image = Image.open(name).convert("RGB")
        if meta["task"] == "classification":
            print(name, ", ".join(f"{label} {p:.1%}" for label, p in classify(run, meta, image)))
        elif meta["task"] == "detection":
            found = detect(run, meta, image)
            print(f"{name}: {len(found)} objects", "; ".join(f"{c} {s:.2f} {b}" for c, s, b in found))
        else:
            counts = np.bincount(segment(run, meta, image).ravel(), minlength=len(meta["classes"]))
            shares = sorted(zip(counts / counts.sum(), meta["classes"]), reverse=True)
            print(name, ", ".join(f"{label} {share:.1%}" for share, label in shares if share > 0))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit("usage: python serve_exported.py MODEL.onnx|MODEL.xml IMAGE [IMAGE ...]")
    main(sys.argv[1], sys.argv[2:])
