"""effvit_plugins.deploy.runtime: the numpy pre-processing equals mmdet's / mmseg's test pipeline + data
preprocessor bit for bit, mask pasting equals mmdet's, and detections are compared pair by pair."""
import numpy as np
import pytest
import torch

from effvit_plugins.deploy.runtime import (Detections, compare_detections, generated_image, paste_masks,
                                           preprocess)

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


@pytest.mark.parametrize("size", [(100, 141), (96, 120), (300, 170), (33, 47)])
def test_preprocess_equals_mmdet_test_pipeline_and_data_preprocessor(size):
    from mmcv.transforms import Compose
    from mmdet.models.data_preprocessors import DetDataPreprocessor

    import effvit_plugins  # noqa: F401  (registers the mmdet scope's transforms through the compat layer)
    from mmengine.registry import init_default_scope

    init_default_scope("mmdet")
    image = generated_image(*size, seed=3)
    pipeline = Compose([dict(type="mmdet.LoadImageFromNDArray"), dict(type="mmdet.Resize", scale=(160, 128),
                                                                       keep_ratio=True),
                        dict(type="mmdet.PackDetInputs", meta_keys=("img_shape", "ori_shape", "scale_factor"))])
    data = pipeline(dict(img=image, img_id=0))
    dp = DetDataPreprocessor(mean=MEAN, std=STD, bgr_to_rgb=True, pad_size_divisor=32)
    batch = dp(dict(inputs=[data["inputs"]], data_samples=[data["data_samples"]]), False)
    meta = dict(pipeline=[dict(type="Resize", scale=[160, 128], keep_ratio=True)], mean=MEAN, std=STD,
                bgr_to_rgb=True, pad_value=0, input_size=list(batch["inputs"].shape[-2:]))
    pre = preprocess(image, meta)
    info = batch["data_samples"][0].metainfo
    assert np.array_equal(pre.input, batch["inputs"].numpy())
    assert pre.img_shape == info["img_shape"] and pre.ori_shape == info["ori_shape"]
    assert pre.scale_factor == pytest.approx(info["scale_factor"], abs=0)


def test_preprocess_refuses_an_image_larger_than_the_export():
    meta = dict(pipeline=[dict(type="Resize", scale=[1333, 800], keep_ratio=True)], mean=MEAN, std=STD,
                bgr_to_rgb=True, input_size=[128, 160])
    with pytest.raises(ValueError, match=r"to 800x1000, larger than the exported input size 128x160.*--shape"):
        preprocess(generated_image(96, 120), meta)


def test_paste_masks_equals_mmdet():
    from mmdet.models.roi_heads.mask_heads.fcn_mask_head import _do_paste_mask

    g = torch.Generator().manual_seed(0)
    h, w = 70, 90
    masks = torch.rand(12, 28, 28, generator=g)
    xy = torch.rand(12, 2, generator=g) * torch.tensor([w, h]) - 10  # some boxes start outside the image
    wh = torch.rand(12, 2, generator=g) * 60 + 0.3  # some tiny
    boxes = torch.cat([xy, xy + wh], dim=1)
    ref = np.zeros((12, h, w), bool)
    for i in range(12):  # mmdet on the CPU: one box at a time, only the region around it
        m, (ys, xs) = _do_paste_mask(masks[i:i + 1, None], boxes[i:i + 1], h, w, skip_empty=True)
        ref[i, ys, xs] = (m[0] >= 0.5).numpy()
    ours = paste_masks(masks.numpy(), boxes.numpy(), (h, w), 0.5)
    assert ours.shape == ref.shape and ours.any()
    assert (ours != ref).sum() <= 3  # float rounding of the bilinear weights at exactly 0.5


def _dets(boxes, scores, labels):
    return Detections(np.asarray(boxes, np.float32), np.asarray(scores, np.float32), np.asarray(labels))


def test_compare_detections_pairs_near_equal_scores_and_flags_differences():
    a = _dets([[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]], [0.9, 0.50001, 0.5], [1, 2, 3])
    b = _dets([[0, 0, 10, 10], [1, 1, 2, 2], [5, 5, 20, 20]], [0.9, 0.50002, 0.50001], [1, 3, 2])
    d = compare_detections(a, b)
    assert d.within(1e-6, 1e-4, 0) and d.labels_differ == 0 and d.box == 0
    c = _dets([[0, 0, 10, 10], [5, 5, 20, 21], [1, 1, 2, 2]], [0.9, 0.5, 0.4], [1, 2, 4])
    d = compare_detections(a, c)
    assert d.box == 1 and d.labels_differ == 1 and not d.within(0.5, 1, 0)
    assert compare_detections(a, _dets(b.boxes[:2], b.scores[:2], b.labels[:2])).box == float("inf")


def test_compare_detections_excuses_only_detections_scored_at_a_cut_off():
    """A detection within the score tolerance of a cut-off (the lowest kept score of a result holding max_per_img
    detections, or score_thr) may be in one result only; one above the cut-offs may not."""
    boxes = [[0, 0, 10, 10], [5, 5, 20, 20], [1, 1, 2, 2]]
    a = _dets(boxes, [0.9, 0.6, 0.30004], [1, 2, 3])
    b = _dets(boxes[:2] + [[40, 40, 50, 50]], [0.9, 0.6, 0.30001], [1, 2, 4])  # the last ones swapped at the cut
    assert not compare_detections(a, b).within(1e-2, 1e-4, 0)  # without cut-offs: a label differs
    d = compare_detections(a, b, max_per_img=3)
    assert d.within(1e-2, 1e-4, 0) and d.at_cut == (1, 1) and "scored at a cut-off" in str(d)
    assert not compare_detections(a, b, max_per_img=4).within(1e-2, 1e-4, 0)  # neither result is full
    c = _dets(boxes[:2], [0.9, 0.6], [1, 2])  # one detection near score_thr only in a
    assert compare_detections(a, c, score_thr=0.3).within(1e-2, 1e-4, 0)
    assert not compare_detections(a, c, score_thr=0.2).within(1e-2, 1e-4, 0)
    e = _dets([boxes[0], [40, 40, 50, 50], boxes[2]], [0.9, 0.6, 0.30004], [1, 4, 3])  # differs above the cut
    assert not compare_detections(a, e, max_per_img=3).within(1e-2, 1e-4, 0)
