"""effvit_plugins.deploy.detectors: the exportable post-processing steps equal mmdet's own (box decoding, RoI
feature extraction, NMS per group) on random inputs."""
import torch

from effvit_plugins.deploy.detectors import RoIFeatures, batched_nms, decode_deltas, multiclass_nms


def _boxes(n, g, w=200.0, h=150.0):
    xy = torch.rand(n, 2, generator=g) * torch.tensor([w, h])
    return torch.cat([xy, xy + torch.rand(n, 2, generator=g) * 120 + 1], dim=1)


def test_decode_deltas_equals_mmdet_coder():
    from mmdet.models.task_modules.coders import DeltaXYWHBBoxCoder

    g = torch.Generator().manual_seed(0)
    anchors, deltas = _boxes(50, g), torch.randn(50, 8, generator=g) * 2  # two boxes per anchor, some clamped
    coder = DeltaXYWHBBoxCoder(target_means=[0.1, 0, 0, -0.1], target_stds=[0.1, 0.1, 0.2, 0.2])
    ref = coder.decode(anchors.repeat_interleave(2, 0), deltas.reshape(-1, 4), max_shape=(150, 200)).reshape(50, 8)
    ours = decode_deltas(anchors, deltas, coder.means, coder.stds, torch.tensor([150.0, 200.0]))
    assert torch.allclose(ours, ref, atol=1e-4, rtol=0)


def test_roi_features_equal_mmdet_single_roi_extractor():
    from mmdet.models.roi_heads.roi_extractors import SingleRoIExtractor
    from mmdet.structures.bbox import bbox2roi

    g = torch.Generator().manual_seed(1)
    feats = [torch.randn(1, 8, 64 // s, 96 // s, generator=g) for s in (1, 2, 4, 8)]
    big = torch.tensor([[10.0, 10.0, 160.0, 160.0], [0.0, 0.0, 300.0, 300.0], [0.0, 0.0, 500.0, 450.0]])
    boxes = torch.cat([_boxes(30, g, 300, 200), big])  # sides of 1-121, 150, 300, 474 px: all four levels
    ext = SingleRoIExtractor(dict(type="RoIAlign", output_size=7, sampling_ratio=0), 8, [4, 8, 16, 32])
    ref = ext(feats, bbox2roi([boxes]))
    ours = RoIFeatures([4, 8, 16, 32], 7)(feats, boxes)
    levels = ext.map_roi_levels(bbox2roi([boxes]), 4)
    assert len(set(levels.tolist())) == 4 and torch.allclose(ours, ref, atol=1e-5, rtol=0)


def test_batched_nms_and_multiclass_nms_equal_mmdet():
    from mmcv.ops import batched_nms as mm_batched_nms
    from mmdet.models.layers import multiclass_nms as mm_multiclass_nms

    g = torch.Generator().manual_seed(2)
    boxes, scores, groups = _boxes(300, g, 100, 100), torch.rand(300, generator=g), torch.randint(0, 5, (300,),
                                                                                                  generator=g)
    _, ref = mm_batched_nms(boxes, scores, groups, dict(type="nms", iou_threshold=0.5))
    assert torch.equal(batched_nms(boxes, scores, groups, 0.5), ref)
    per_class, cls_scores = _boxes(200, g, 100, 100).repeat(1, 6), torch.softmax(torch.randn(200, 7, generator=g), 1)
    dets, labels = mm_multiclass_nms(per_class, cls_scores, 0.1, dict(type="nms", iou_threshold=0.5), 50)
    b, s, l = multiclass_nms(per_class, cls_scores, 0.1, 0.5, 50)
    assert torch.equal(b, dets[:, :4]) and torch.equal(s, dets[:, 4]) and torch.equal(l, labels)


def test_dense_post_process_with_a_level_without_candidates_runs_in_pytorch_and_onnxruntime(tmp_path):
    """A RetinaNet level with no score above score_thr (common on the coarse levels) gives no boxes there: PyTorch
    and the exported graph (traced with candidates on every level) both run it and agree."""
    import numpy as np
    import onnxruntime as ort

    from effvit_plugins.deploy import OPSET
    from effvit_plugins.deploy.detectors import DenseDetectionPostProcess

    g = torch.Generator().manual_seed(0)
    anchors = [_boxes(4 * 5 * 2, g, 80, 64), _boxes(2 * 3 * 2, g, 80, 64)]  # 2 anchors per cell, 3 classes
    post = DenseDetectionPostProcess(anchors, 3, [0.0] * 4, [0.1, 0.1, 0.2, 0.2], score_thr=0.05, nms_pre=10,
                                     iou_threshold=0.5, max_per_img=8, min_bbox_size=0)

    def inputs(empty_level):
        cls = [torch.randn(1, 6, 4, 5, generator=g), torch.randn(1, 6, 2, 3, generator=g)]
        if empty_level is not None:
            cls[empty_level] = torch.full_like(cls[empty_level], -10.0)
        reg = [torch.randn(1, 8, 4, 5, generator=g) * 0.5, torch.randn(1, 8, 2, 3, generator=g) * 0.5]
        return (*cls, *reg, torch.tensor([64.0, 80.0]), torch.tensor([1.0, 1.0]))

    class Wrap(torch.nn.Module):
        def forward(self, c0, c1, r0, r1, img_shape, scale_factor):
            return post([c0, c1], [r0, r1], img_shape, scale_factor)

    names = ["c0", "c1", "r0", "r1", "img_shape", "scale_factor"]
    torch.onnx.export(Wrap(), inputs(None), str(tmp_path / "p.onnx"), dynamo=False, opset_version=OPSET,
                      input_names=names, output_names=["boxes", "scores", "labels"])
    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    for empty in (1, 0):
        x = inputs(empty)
        ref = Wrap()(*x)
        out = sess.run(None, {n: t.numpy() for n, t in zip(names, x)})
        assert len(ref[0]) > 0 and out[0].shape == tuple(ref[0].shape)
        for o, r in zip(out, ref):
            assert np.allclose(o, r.numpy(), atol=1e-4)
