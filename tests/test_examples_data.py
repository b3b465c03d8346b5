"""Built-in example data and the examples' COCO evaluation, against pycocotools."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import perfkit
from examples import common
from examples.data import (
    CocoDetection,
    DataError,
    classification_probe,
    classification_transform,
    coco_split,
    collate_detection,
    imagenet_val,
    make_classification_dataset,
    make_detection_dataset,
)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_detection_dataset(tmp_path_factory.mktemp("coco"), train_images=10, val_images=6)


def test_generation_is_deterministic(tmp_path, coco_root):
    again = make_detection_dataset(tmp_path / "again", train_images=10, val_images=6)
    for relative in ("annotations/instances_val2017.json", "val2017/000000000011.jpg"):
        assert (again / relative).read_bytes() == (coco_root / relative).read_bytes()


def test_detection_set_has_crowds_categories_and_every_coco_size(coco_root):
    instances = json.loads((coco_root / "annotations/instances_train2017.json").read_text())
    anns = instances["annotations"]
    assert {c["id"] for c in instances["categories"]} == {1, 3, 18}
    assert any(a["iscrowd"] for a in anns) and not all(a["iscrowd"] for a in anns)
    areas = [a["bbox"][2] * a["bbox"][3] for a in anns]
    assert min(areas) < 32**2 and any(32**2 <= x < 96**2 for x in areas) and max(areas) >= 96**2
    names = {i["file_name"] for i in instances["images"]}
    assert names == {p.name for p in (coco_root / "train2017").iterdir()}


def test_targets_are_xyxy_without_crowds(coco_root):
    images, annotations = coco_split(coco_root, "val")
    dataset = CocoDetection(images, annotations)
    instances = json.loads(annotations.read_text())
    image, target = dataset[0]
    own = [a for a in instances["annotations"] if a["image_id"] == target["image_id"]]
    expected = [
        [x, y, x + w, y + h] for (x, y, w, h) in (a["bbox"] for a in own if not a["iscrowd"])
    ]
    assert target["boxes"].tolist() == expected
    assert image.dtype == torch.float32 and image.min() >= 0 and image.max() <= 1
    assert image.shape[0] == 3


def test_missing_layouts_say_what_to_download(tmp_path):
    with pytest.raises(
        DataError, match=r"--data: .*annotations/instances_val2017.json.*cocodataset"
    ):
        (tmp_path / "val2017").mkdir()
        coco_split(tmp_path, "val")
    with pytest.raises(DataError, match=r"--data: .*ImageNet validation folder.*image-net.org"):
        imagenet_val(tmp_path / "val2017")


def test_classification_set_is_an_image_folder(tmp_path):
    import torchvision

    folder = make_classification_dataset(tmp_path, classes=3, images_per_class=2, image_size=32)
    assert imagenet_val(tmp_path) == folder
    dataset = torchvision.datasets.ImageFolder(folder)
    assert len(dataset.classes) == 3 and len(dataset) == 6
    train = torchvision.datasets.ImageFolder(tmp_path / "train")  # other images, same classes
    assert train.classes == dataset.classes and len(train) == 3 * 4


@pytest.mark.slow
def test_the_probe_learns_the_built_in_classes(tmp_path):
    """The built-in weights' top-1 on the validation images, computed here with torch.topk,
    is far above the 1/8 of chance (the probe is fitted to the train images only)."""
    import torchvision

    folder = make_classification_dataset(tmp_path)
    weights = classification_probe(tmp_path, 64)
    model = torchvision.models.resnet50().eval()
    model.load_state_dict(torch.load(weights, weights_only=True))
    dataset = torchvision.datasets.ImageFolder(folder, classification_transform(64))
    correct = 0
    with torch.inference_mode():
        for images, labels in torch.utils.data.DataLoader(dataset, batch_size=16):
            correct += int((model(images).topk(1).indices[:, 0] == labels).sum())
    assert correct / len(dataset) >= 0.75


class Replay(torch.nn.Module):
    """A "detector" that returns prepared outputs, batch after batch."""

    def __init__(self, outputs: list[list[dict[str, torch.Tensor]]]) -> None:
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(()))
        self.batches: Iterator[list[dict[str, torch.Tensor]]] = iter(outputs)

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return next(self.batches)


def test_evaluation_equals_pycocotools_and_counts_labels_without_category(tmp_path, coco_root):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images, annotations = coco_split(coco_root, "val")
    dataset = CocoDetection(images, annotations)
    batches = list(torch.utils.data.DataLoader(dataset, batch_size=4, collate_fn=collate_detection))
    generator = torch.Generator().manual_seed(0)
    outputs, results = [], []
    for _, targets in batches:
        batch = []
        for target in targets:
            # ground truth, jittered, plus one detection of label 12 (no COCO category owns it)
            boxes = target["boxes"] + torch.randn(target["boxes"].shape, generator=generator) * 3
            labels = target["labels"]
            scores = torch.rand(len(labels), generator=generator)
            for box, label, score in zip(
                boxes.tolist(), labels.tolist(), scores.tolist(), strict=True
            ):
                x1, y1, x2, y2 = box
                results.append({"image_id": target["image_id"], "category_id": label,
                                "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score})  # fmt: skip
            batch.append({
                "boxes": torch.cat([boxes, torch.tensor([[0.0, 0.0, 20.0, 20.0]])]),
                "labels": torch.cat([labels, torch.tensor([12])]),
                "scores": torch.cat([scores, torch.tensor([0.9])]),
            })  # fmt: skip
        outputs.append(batch)
    env = common.Setup(device=torch.device("cpu"), precision="fp32")
    model = Replay(outputs)
    with perfkit.Run("eval", out_dir=tmp_path, probes=None) as run:
        coco = common.COCOEvaluation(annotations)
        for images, targets in batches:
            coco.update(common.detect(model, images, env), targets)
        stats = coco.finish(run, env)
    assert run.summary()["detections_without_category"] == len(dataset)  # one per image

    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(annotations))
        reference = COCOeval(gt, gt.loadRes(results), "bbox")
        reference.evaluate()
        reference.accumulate()
        reference.summarize()
    assert stats["AP"] == pytest.approx(reference.stats[0], abs=1e-12)
    assert stats["ARl"] == pytest.approx(reference.stats[11], abs=1e-12)
    assert 0.2 < stats["AP"] < 1  # jittered boxes: a real, imperfect score


def test_unknown_device_is_named() -> None:
    args = argparse.Namespace(seed=0, device="tpu:9", precision="fp32")
    with pytest.raises(common.ExampleError, match="--device: 'tpu:9'"):
        common.setup(args)
