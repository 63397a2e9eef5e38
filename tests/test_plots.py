"""curves.png of every task: the panels a run's records fill, integer epoch/iteration ticks, markers,
percent axes up to 100, top-5 only above 5 classes. Synthetic records shaped like each trainer's, drawn in the
panels each task hands the engine."""

from __future__ import annotations

from typing import Any, Dict, List

from PIL import Image

from splitattn.tasks.classification.trainer import classification_panels
from splitattn.tasks.detection.trainer import PANELS as DETECTION_PANELS
from splitattn.tasks.segmentation.trainer import PANELS as SEGMENTATION_PANELS
from splitattn.viz.curves import curves_figure, plot_curves


def _classification_records(epochs: int = 2) -> List[Dict[str, Any]]:
    return [
        {
            "epoch": e,
            "step": 10 * e,
            "lr": 0.1 * (1 - e / (epochs + 1)),
            "train_loss": 1.1 - 0.2 * e,
            "train_top1": 40.0 + 10 * e,
            "train_images_per_sec": 50.0,
            "train_bad_images": 0,
            "val_loss": 1.0 - 0.15 * e,
            "val_top1": 45.0 + 8 * e,
            "val_top5": 100.0,
            "val_bad_images": 0,
        }
        for e in range(1, epochs + 1)
    ]


def _detection_records() -> List[Dict[str, Any]]:
    records = [
        {
            "iter": i,
            "lr": 0.02 * min(1.0, i / 100),
            "train_loss": 2.5 - i / 150,
            "train_loss_classifier": 0.8 - i / 500,
            "train_loss_box_reg": 0.5 - i / 800,
            "train_loss_objectness": 0.4 - i / 1000,
            "train_loss_rpn_box_reg": 0.2 - i / 2000,
            "train_loss_mask": 0.6 - i / 700,
        }
        for i in range(20, 201, 20)
    ]
    records[-1].update(
        val_bbox_AP=4.2,
        val_bbox_AP50=9.8,
        val_bbox_AP75=3.1,
        val_bbox_APs=float("nan"),
        val_segm_AP=3.5,
        val_segm_AP50=8.0,
        val_segm_AP75=2.2,
    )
    return records


def _segmentation_records() -> List[Dict[str, Any]]:
    return [
        {
            "epoch": e,
            "step": 13 * e,
            "lr": 0.02 * (1 - e / 13) ** 0.9,
            "train_loss": 2.0 / e,
            **({"val_loss": 2.1 / e, "val_miou": 10.0 + 3 * e, "val_pixel_acc": 50.0 + 3 * e} if e % 2 == 0 else {}),
        }
        for e in range(1, 8)
    ]


def _panels(figure) -> Dict[str, Any]:
    return {axis.get_title(): axis for axis in figure.axes}


def _lines(axis) -> Dict[str, Any]:
    """Plotted lines by legend label (a panel without a legend: its one line under the title)."""
    legend = axis.get_legend()
    labels = [text.get_text() for text in legend.get_texts()] if legend else [axis.get_title()]
    return dict(zip(labels, axis.get_lines()))


def _assert_integer_x_ticks(figure) -> None:
    figure.canvas.draw()
    for axis in figure.axes:
        low, high = axis.get_xlim()
        ticks = [tick for tick in axis.xaxis.get_major_ticks() if low <= tick.get_loc() <= high]
        assert ticks, axis.get_title()
        for tick in ticks:
            assert float(tick.get_loc()).is_integer(), (axis.get_title(), tick.get_loc())
            assert tick.label1.get_text().isdigit(), (axis.get_title(), tick.label1.get_text())


def test_classification_curves(tmp_path):
    records = _classification_records(epochs=2)
    plot_curves(records, tmp_path / "curves.png", classification_panels(3))
    with Image.open(tmp_path / "curves.png") as png:
        assert png.format == "PNG" and png.width > 800
    figure = curves_figure(records, classification_panels(3))
    panels = _panels(figure)
    assert set(panels) == {"loss", "learning rate", "accuracy (%)"}
    assert set(_lines(panels["loss"])) == {"train", "val"}
    assert set(_lines(panels["accuracy (%)"])) == {"train top-1", "val top-1"}  # 3 classes: top-5 is always 100%
    assert panels["accuracy (%)"].get_ylim()[1] == 100
    _assert_integer_x_ticks(figure)
    assert [
        tick.get_loc()
        for tick in panels["loss"].xaxis.get_major_ticks()
        if panels["loss"].get_xlim()[0] <= tick.get_loc() <= panels["loss"].get_xlim()[1]
    ] == [1, 2]
    many = _panels(curves_figure(records, classification_panels(10)))
    assert "val top-5" in _lines(many["accuracy (%)"])


def test_detection_curves_with_one_evaluation(tmp_path):
    records = _detection_records()
    plot_curves(records, tmp_path / "curves.png", DETECTION_PANELS, "iter")
    assert (tmp_path / "curves.png").stat().st_size > 0
    figure = curves_figure(records, DETECTION_PANELS, "iter")
    panels = _panels(figure)
    assert set(panels) == {"loss", "loss components (train)", "learning rate", "box AP (%)", "mask AP (%)"}
    assert set(_lines(panels["loss components (train)"])) == {
        "loss_classifier",
        "loss_box_reg",
        "loss_objectness",
        "loss_rpn_box_reg",
        "loss_mask",
    }
    for title in ("box AP (%)", "mask AP (%)"):
        axis = panels[title]
        assert axis.get_ylim() == (0, 100)  # a lone evaluation at 4% reads on a 0-100 axis
        for line in axis.get_lines():
            assert len(line.get_xdata()) == 1 and line.get_marker() == "o"
    assert panels["box AP (%)"].get_xlabel() == "iteration"
    _assert_integer_x_ticks(figure)


def test_segmentation_curves(tmp_path):
    records = _segmentation_records()
    plot_curves(records, tmp_path / "curves.png", SEGMENTATION_PANELS)
    assert (tmp_path / "curves.png").stat().st_size > 0
    figure = curves_figure(records, SEGMENTATION_PANELS)
    panels = _panels(figure)
    assert set(panels) == {"loss", "learning rate", "mIoU / pixel accuracy (%)"}
    loss = _lines(panels["loss"])
    assert list(loss["train"].get_xdata()) == [1, 2, 3, 4, 5, 6, 7]
    assert list(loss["val"].get_xdata()) == [2, 4, 6]  # evaluated every second epoch
    low, high = panels["mIoU / pixel accuracy (%)"].get_ylim()
    assert high == 100 and 0 <= low <= 16  # below the lowest value (16% mIoU)
    _assert_integer_x_ticks(figure)


def test_nothing_to_plot_writes_nothing(tmp_path):
    plot_curves([{"epoch": 1, "note": "text only"}], tmp_path / "curves.png", SEGMENTATION_PANELS)
    assert not (tmp_path / "curves.png").exists()


def test_cascade_stage_losses_join_the_components_panel():
    """Keys known only from the records (a cascade's per-stage losses) are drawn through the panel's prefix."""
    from splitattn.viz.curves import curve_panels

    records = [{"iter": 20, "train_loss": 2.0, "train_loss_classifier_0": 0.5, "train_loss_box_reg_2": 0.3}]
    panels = {panel.title: panel for panel in curve_panels(records, DETECTION_PANELS)}
    assert panels["loss components (train)"].series == (
        ("train_loss_box_reg_2", "loss_box_reg_2"),
        ("train_loss_classifier_0", "loss_classifier_0"),
    )
    assert set(panels) == {"loss", "loss components (train)"}  # nothing evaluated, no learning rate logged
