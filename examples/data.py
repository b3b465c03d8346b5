"""Built-in data for the examples, and readers for the real layouts the seeds use.

Built-in sets are generated deterministically (same seed, same bytes) so every example runs with
no arguments and no download:

- a COCO-format detection set: ``annotations/instances_{train,val}2017.json`` next to
  ``train2017/`` and ``val2017/`` JPEGs, objects of three COCO categories (person, car, dog) at
  small / medium / large COCO sizes, and a crowd annotation (``iscrowd=1``) on some images;
- an ImageFolder classification set: ``val/<class>/<image>.JPEG``.

Real data takes the same layouts: COCO 2017 as the seeds unpack it (annotations/, train2017/,
val2017/) and an ImageNet validation folder with one sub-folder per class (pytorch/examples'
extract_ILSVRC.sh layout).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

#: (COCO category id, name, RGB colour of its generated objects, shape)
DETECTION_CATEGORIES = (
    (1, "person", (220, 60, 60), "ellipse"),
    (3, "car", (60, 90, 220), "rectangle"),
    (18, "dog", (60, 180, 80), "triangle"),
)
COCO_URL = "https://cocodataset.org/#download"
IMAGENET_URL = "https://image-net.org/ (ILSVRC2012_img_val.tar, then extract_ILSVRC.sh)"
# COCO's size classes, in pixels squared: small < 32^2 <= medium < 96^2 <= large.
_SIDE_RANGES = ((10, 28), (40, 90), (100, 180))
_STAMP = ".perfkit-generated.json"


class DataError(ValueError):
    """A dataset path that does not hold the expected layout; the message says what to get."""


# --------------------------------------------------------------------------------------------
# Generation


def _generated(root: Path, params: dict[str, Any]) -> bool:
    """True when ``root`` already holds a set generated with ``params``."""
    stamp = root / _STAMP
    return stamp.is_file() and json.loads(stamp.read_text()) == params


def _stamp(root: Path, params: dict[str, Any]) -> None:
    (root / _STAMP).write_text(json.dumps(params))


def _background(rng: np.random.Generator, height: int, width: int) -> np.ndarray:
    """A smooth colour gradient with noise (uint8 H x W x 3)."""
    corner = rng.uniform(40, 200, size=(2, 2, 3))
    ys = np.linspace(0, 1, height)[:, None, None]
    xs = np.linspace(0, 1, width)[None, :, None]
    top = corner[0, 0] * (1 - xs) + corner[0, 1] * xs
    bottom = corner[1, 0] * (1 - xs) + corner[1, 1] * xs
    image = top * (1 - ys) + bottom * ys + rng.normal(0, 8, size=(height, width, 3))
    return np.clip(image, 0, 255).astype(np.uint8)


def _shape_mask(shape: str, h: int, w: int) -> np.ndarray:
    """Boolean mask (h x w) of a shape that fills its box."""
    ys = (np.arange(h)[:, None] + 0.5) / h
    xs = (np.arange(w)[None, :] + 0.5) / w
    if shape == "ellipse":
        return np.asarray((xs - 0.5) ** 2 + (ys - 0.5) ** 2 <= 0.25)
    if shape == "triangle":
        return np.asarray(np.abs(xs - 0.5) <= ys / 2)
    return np.ones((h, w), bool)


def _polygon(shape: str, x: float, y: float, w: float, h: float) -> list[float]:
    """COCO polygon [x1, y1, x2, y2, ...] of a shape in its box (pixels)."""
    if shape == "ellipse":
        angles = np.linspace(0, 2 * np.pi, 16, endpoint=False)
        points = np.stack([x + w / 2 * (1 + np.cos(angles)), y + h / 2 * (1 + np.sin(angles))], 1)
        return [round(float(v), 2) for v in points.reshape(-1)]
    if shape == "triangle":
        return [x + w / 2, y, x + w, y + h, x, y + h]
    return [x, y, x + w, y, x + w, y + h, x, y + h]


def _save_jpeg(array: np.ndarray, path: Path) -> None:
    from PIL import Image

    Image.fromarray(array).save(path, quality=90)


def make_detection_dataset(
    root: str | Path,
    *,
    train_images: int = 32,
    val_images: int = 16,
    image_size: tuple[int, int] = (224, 320),
    seed: int = 0,
) -> Path:
    """Generate (once) a COCO-format detection set under ``root``; returns ``root``.

    Images are ``image_size[0]`` to ``image_size[1]`` pixels a side; each holds 1-6 objects
    of :data:`DETECTION_CATEGORIES` at COCO's three size classes, every fifth image a crowd
    region as well.
    """
    root = Path(root)
    params = {
        "kind": "coco-detection",
        "train_images": train_images,
        "val_images": val_images,
        "image_size": list(image_size),
        "seed": seed,
    }
    if _generated(root, params):
        return root
    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    categories = [{"id": c, "name": n, "supercategory": n} for c, n, _, _ in DETECTION_CATEGORIES]
    image_id, annotation_id = 1, 1
    for split, count in (("train", train_images), ("val", val_images)):
        folder = root / f"{split}2017"
        folder.mkdir(exist_ok=True)
        images, annotations = [], []
        for _ in range(count):
            height, width = rng.integers(image_size[0], image_size[1] + 1, 2).tolist()
            array = _background(rng, height, width)
            objects = [
                (False, int(rng.integers(len(DETECTION_CATEGORIES))))
                for _ in range(int(rng.integers(1, 7)))
            ]
            if image_id % 5 == 0:
                objects.append((True, 0))  # a crowd of people, as COCO marks them
            for crowd, category_index in objects:
                category_id, _, colour, shape = DETECTION_CATEGORIES[category_index]
                low, high = _SIDE_RANGES[2 if crowd else int(rng.integers(3))]
                w = int(min(rng.integers(low, high + 1), width - 2))
                h = int(min(rng.integers(low, high + 1), height - 2))
                x = int(rng.integers(0, width - w))
                y = int(rng.integers(0, height - h))
                mask = _shape_mask(shape, h, w)
                shade = np.clip(np.array(colour) + rng.normal(0, 15, 3), 0, 255)
                array[y : y + h, x : x + w][mask] = shade.astype(np.uint8)
                annotations.append(
                    {
                        "id": annotation_id,
                        "image_id": image_id,
                        "category_id": category_id,
                        "bbox": [x, y, w, h],
                        "area": float(mask.sum()),
                        "iscrowd": int(crowd),
                        "segmentation": [_polygon(shape, x, y, w, h)],
                    }
                )
                annotation_id += 1
            file_name = f"{image_id:012d}.jpg"
            _save_jpeg(array, folder / file_name)
            images.append(
                {"id": image_id, "file_name": file_name, "height": height, "width": width}
            )
            image_id += 1
        instances = {"images": images, "annotations": annotations, "categories": categories}
        (root / "annotations" / f"instances_{split}2017.json").write_text(json.dumps(instances))
    _stamp(root, params)
    return root


def make_classification_dataset(
    root: str | Path,
    *,
    classes: int = 8,
    images_per_class: int = 8,
    train_images_per_class: int = 4,
    image_size: int = 256,
    seed: int = 0,
) -> Path:
    """Generate (once) an ImageFolder set ``root/val/<class>/*.JPEG`` and a smaller
    ``root/train`` of other images of the same classes; returns ``root/val``.

    Each class has its own colour and stripe frequency, so a classifier can tell them apart.
    """
    root = Path(root)
    params = {
        "kind": "imagefolder",
        "classes": classes,
        "images_per_class": images_per_class,
        "train_images_per_class": train_images_per_class,
        "image_size": image_size,
        "seed": seed,
    }
    val = root / "val"
    if _generated(root, params):
        return val
    for stale in root.glob(PROBE_FILES):  # fitted to the images being replaced
        stale.unlink()
    rng = np.random.default_rng(seed)
    train_rng = np.random.default_rng(seed + 1)  # the train images' own stripes and noise
    xs = np.linspace(0, 1, image_size)[None, :, None]
    for label in range(classes):
        colour = rng.uniform(30, 225, 3)
        for split, count, draw in (
            ("val", images_per_class, rng),
            ("train", train_images_per_class, train_rng),
        ):
            folder = root / split / f"class_{label:03d}"
            folder.mkdir(parents=True, exist_ok=True)
            for index in range(count):
                phase = draw.uniform(0, np.pi)
                stripes = 0.5 + 0.5 * np.sin(2 * np.pi * (label + 2) * xs + phase)
                noise = draw.normal(0, 12, (image_size, image_size, 3))
                array = np.clip(colour * (0.6 + 0.4 * stripes) + noise, 0, 255).astype(np.uint8)
                _save_jpeg(array, folder / f"{label:03d}_{index:04d}.JPEG")
    _stamp(root, params)
    return val


#: The built-in classification set's ResNet-50 weights, one file per image size
#: (:func:`classification_probe`).
PROBE_FILES = "resnet50-builtin-probe-*px.pth"
#: Ridge penalty of the probe, per training image, on standardised features.
_PROBE_RIDGE = 1e-2


def probe_path(root: str | Path, image_size: int) -> Path:
    """Where :func:`classification_probe` keeps the weights for ``image_size`` pixels."""
    return Path(root) / PROBE_FILES.replace("*", str(image_size))


def classification_probe(root: str | Path, image_size: int = 224) -> Path:
    """Weights for the built-in classification set at ``image_size`` pixels, made once beside
    it (:func:`probe_path`): torchvision's ResNet-50 with random convolution weights (seed 0)
    and its classifier fitted to ``root/train`` - ridge regression of the one-hot classes on
    the pooled features, a linear probe - so its accuracy on ``root/val`` shows a model that
    learnt the built-in classes (not ImageNet accuracy). Class i of the set is output i."""
    import torchvision

    root = Path(root)
    path = probe_path(root, image_size)
    if path.is_file():
        return path
    torch.manual_seed(0)
    model = torchvision.models.resnet50().eval()
    head, model.fc = model.fc, torch.nn.Identity()
    folder = torchvision.datasets.ImageFolder(root / "train", classification_transform(image_size))
    features, labels = [], []
    with torch.inference_mode():
        for images, classes in torch.utils.data.DataLoader(folder, batch_size=16):
            features.append(model(images).double())
            labels.append(classes)
    x, y = torch.cat(features), torch.cat(labels)
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = torch.cat([(x - mean) / std, torch.ones(len(x), 1, dtype=x.dtype)], 1)
    targets = torch.nn.functional.one_hot(y, len(folder.classes)).double()
    ridge = _PROBE_RIDGE * len(z) * torch.eye(z.shape[1], dtype=z.dtype)
    solution = torch.linalg.solve(z.T @ z + ridge, z.T @ targets)  # (features + 1, classes)
    weight = (solution[:-1] / std[:, None]).T  # folded: w . (x - mean) / std + b
    bias = solution[-1] - weight @ mean
    with torch.no_grad():
        head.weight.zero_()
        head.bias.fill_(-1e4)  # the other 992 ImageNet outputs never win
        head.weight[: len(bias)] = weight.float()
        head.bias[: len(bias)] = bias.float()
    model.fc = head
    partial = path.with_suffix(".tmp")
    torch.save(model.state_dict(), partial)
    partial.replace(path)
    return path


# --------------------------------------------------------------------------------------------
# Real layouts


def coco_split(data: str | Path, split: str) -> tuple[Path, Path]:
    """(images folder, instances json) of ``split`` ("train" or "val") in a COCO 2017 folder."""
    data = Path(data)
    images = data / f"{split}2017"
    annotations = data / "annotations" / f"instances_{split}2017.json"
    for path, what in ((images, "images folder"), (annotations, "annotations file")):
        if not path.exists():
            raise DataError(
                f"--data: {str(data)!r} has no {what} {path.relative_to(data)}; expected the COCO "
                f"2017 layout (annotations/, train2017/, val2017/) - download {split}2017.zip and "
                f"annotations_trainval2017.zip from {COCO_URL} and unzip them into one folder"
            )
    return images, annotations


def imagenet_val(data: str | Path) -> Path:
    """The class-per-folder validation folder in ``data`` (``data`` itself or ``data/val``)."""
    data = Path(data)
    for folder in (data / "val", data):
        if folder.is_dir() and any(p.is_dir() for p in folder.iterdir()):
            return folder
    raise DataError(
        f"--data: {str(data)!r} holds no ImageNet validation folder (val/<class>/<image>.JPEG); "
        f"download it from {IMAGENET_URL}"
    )


# --------------------------------------------------------------------------------------------
# Datasets


class CocoDetection(torch.utils.data.Dataset[tuple[torch.Tensor, dict[str, Any]]]):
    """COCO images with torchvision-style targets: ``boxes`` (N, 4) xyxy float32 in pixels,
    ``labels`` (N,) COCO category ids (torchvision's 91-class convention), ``image_id``.

    Crowd annotations and boxes without area are left out of the targets (the COCO evaluation
    still sees them in the ground truth). ``train=True`` drops images without any object, as
    torchvision's reference scripts do, and flips images horizontally at random when ``hflip``.
    """

    def __init__(
        self, images: Path, annotations: Path, *, train: bool = False, hflip: bool = False
    ) -> None:
        instances = json.loads(annotations.read_text())
        self.images = images
        by_image: dict[int, list[dict[str, Any]]] = {}
        for ann in instances["annotations"]:
            width, height = ann["bbox"][2:]
            if not ann.get("iscrowd", 0) and width > 1 and height > 1:
                by_image.setdefault(ann["image_id"], []).append(ann)
        entries = sorted(instances["images"], key=lambda image: image["id"])
        if train:
            entries = [image for image in entries if image["id"] in by_image]
        self.entries = entries
        self.annotations = by_image
        self.hflip = hflip
        self.category_ids = sorted(c["id"] for c in instances["categories"])

    def __len__(self) -> int:
        return len(self.entries)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        from PIL import Image
        from torchvision.transforms.functional import pil_to_tensor

        entry = self.entries[index]
        with Image.open(self.images / entry["file_name"]) as file:
            image = pil_to_tensor(file.convert("RGB"))
        anns = self.annotations.get(entry["id"], [])
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh -> xyxy
        labels = torch.tensor([a["category_id"] for a in anns], dtype=torch.int64)
        tensor = image.float() / 255
        if self.hflip and torch.rand(()) < 0.5:
            tensor = tensor.flip(-1)
            boxes[:, [0, 2]] = tensor.shape[-1] - boxes[:, [2, 0]]
        return tensor, {"boxes": boxes, "labels": labels, "image_id": entry["id"]}


def collate_detection(batch: Sequence[tuple[Any, Any]]) -> tuple[list[Any], list[Any]]:
    """(images, targets) as lists: the input form of torchvision detection models."""
    images, targets = zip(*batch, strict=True)
    return list(images), list(targets)


def classification_transform(image_size: int) -> Callable[[Any], torch.Tensor]:
    """torchvision's ImageNet evaluation transform: resize to size*256/224, centre crop,
    normalise with the ImageNet mean and standard deviation."""
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Resize(round(image_size * 256 / 224)),
            transforms.CenterCrop(image_size),
            transforms.ToTensor(),
            transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
