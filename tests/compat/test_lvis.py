"""lvis 0.5.3 evaluates with ``np.float`` (gone since numpy 1.24): effvit_plugins makes ``lvis.eval`` work without
touching numpy itself, whether lvis is imported before or after effvit_plugins."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# a tiny LVIS v1 evaluation: 2 images, 2 categories, one exact and one poor detection
SCRIPT = textwrap.dedent("""
    import json, os, sys, tempfile
    {pre}
    from lvis import LVIS, LVISEval, LVISResults
    {post}
    cats = [dict(id=1, name='a', frequency='f', synset='', synonyms=['a'], def_='', image_count=2, instance_count=2),
            dict(id=2, name='b', frequency='r', synset='', synonyms=['b'], def_='', image_count=1, instance_count=1)]
    imgs = [dict(id=i, width=64, height=64, coco_url=f'http://images.cocodataset.org/val2017/{{i:012d}}.jpg',
                 neg_category_ids=[], not_exhaustive_category_ids=[]) for i in (1, 2)]
    anns = [dict(id=1, image_id=1, category_id=1, bbox=[10, 10, 20, 20], area=400,
                 segmentation=[[10, 10, 30, 10, 30, 30, 10, 30]]),
            dict(id=2, image_id=2, category_id=1, bbox=[5, 5, 30, 30], area=900,
                 segmentation=[[5, 5, 35, 5, 35, 35, 5, 35]]),
            dict(id=3, image_id=2, category_id=2, bbox=[40, 40, 10, 10], area=100,
                 segmentation=[[40, 40, 50, 40, 50, 50, 40, 50]])]
    path = os.path.join(tempfile.mkdtemp(), 'gt.json')
    json.dump(dict(images=imgs, annotations=anns, categories=cats), open(path, 'w'))
    dets = [dict(image_id=1, category_id=1, bbox=[10, 10, 20, 20], score=0.9),
            dict(image_id=2, category_id=1, bbox=[20, 20, 30, 30], score=0.8)]
    gt = LVIS(path)
    ev = LVISEval(gt, LVISResults(gt, dets), 'bbox')
    ev.run()
    print('AP=%.4f' % ev.results['AP'])
""")


def run(pre, post=""):
    code = SCRIPT.format(pre=pre, post=post)
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(hasattr(np, "float"), reason="numpy < 1.24 still has np.float: nothing to fix")
def test_lvis_eval_fails_without_and_works_with_effvit_plugins():
    bare = run("")
    assert bare.returncode != 0 and "has no attribute 'float'" in bare.stderr, bare.stderr[-2000:]
    for pre, post in (("import effvit_plugins", ""),  # hook installed before lvis is imported
                      ("", "import effvit_plugins")):  # lvis.eval already imported: patched in place
        r = run(pre, post)
        assert r.returncode == 0, r.stderr[-3000:]
        ap = float(r.stdout.strip().split("AP=")[-1])
        assert 0.2 < ap < 1.0  # category 'a': one of two boxes found; 'b' missed


def test_patch_is_narrow():
    import lvis.eval

    import effvit_plugins  # noqa: F401
    from effvit_plugins.compat import lvis as lvis_compat

    assert lvis_compat.is_patched()
    assert lvis.eval.np.float is float and lvis.eval.np.cumsum is np.cumsum
    if not hasattr(np, "float"):
        lvis_compat.install()  # idempotent
        assert not hasattr(np, "float")  # numpy itself is untouched
        assert sum(isinstance(f, lvis_compat._LvisEvalFinder) for f in sys.meta_path) == 1
