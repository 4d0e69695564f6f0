"""Real-benchmark loaders, each on a small fixture written here in the data set's published layout, and the
`real` suite over all of them. Awkward inputs (greyscale, RGBA, odd aspect ratios, invalid depth, keypoints
outside the image, a list row without ground truth) are counted, not fatal; missing data is a one-line error."""

import json
import pickle

import numpy as np
import pytest
from PIL import Image

from mtv.errors import MTVError
from mtv.data.decode import open_image
from mtv.eval.benchmarks.ade20k import load_ade20k
from mtv.eval.benchmarks.coco import load_coco_karpathy
from mtv.eval.benchmarks.imagenet import class_names, load_imagenet
from mtv.eval.benchmarks.kitti import load_kitti
from mtv.eval.benchmarks.navi import load_navi
from mtv.eval.benchmarks.nyuv2 import load_nyuv2
from mtv.eval.benchmarks.refcoco import load_refcoco
from mtv.eval.benchmarks.spair import load_spair
from mtv.eval.suite import run_suite

RNG = np.random.default_rng(0)


def _img(path, size=(40, 30), mode="RGB"):
    path.parent.mkdir(parents=True, exist_ok=True)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = RNG.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    Image.fromarray(arr.squeeze(-1) if channels == 1 else arr, mode).save(path)


def _png16(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint16)).save(path)


def write_imagenet(root):
    for i in range(1000):
        (root / "imagenet" / "val" / f"n{i:08d}").mkdir(parents=True)
    _img(root / "imagenet/val/n00000000/ILSVRC2012_val_00000001.JPEG")
    _img(root / "imagenet/val/n00000001/ILSVRC2012_val_00000002.png", mode="RGBA")
    _img(root / "imagenet/val/n00000999/ILSVRC2012_val_00000003.JPEG", size=(13, 50), mode="L")


def write_coco(root):
    entries = [{"filepath": "val2014", "filename": f"COCO_val2014_{i:012d}.jpg", "split": split,
                "sentences": [{"raw": f"caption {i} {k}"} for k in range(5)]}
               for i, split in enumerate(["test", "train", "test"])]
    (root / "coco").mkdir(parents=True)
    (root / "coco" / "dataset_coco.json").write_text(json.dumps({"images": entries, "dataset": "coco"}))
    for e in entries:
        _img(root / "coco" / e["filepath"] / e["filename"])


def write_ade20k(root):
    base = root / "ADEChallengeData2016"
    for split, n in (("training", 3), ("validation", 2)):
        for i in range(n):
            name = f"ADE_{'train' if split == 'training' else 'val'}_{i + 1:08d}"
            _img(base / "images" / split / f"{name}.jpg", size=(48, 32))
            (base / "annotations" / split).mkdir(parents=True, exist_ok=True)
            labels = RNG.integers(0, 4, (32, 48), dtype=np.uint8)
            Image.fromarray(labels).save(base / "annotations" / split / f"{name}.png")


def write_nyu(root):
    base = root / "nyu"
    for split, folder, prefix in (("test", "official_splits/test", ""), ("train", "sync", "/")):
        rows = []
        for i in range(2):
            rgb, dep = f"bathroom/rgb_{i:05d}.jpg", f"bathroom/sync_depth_{i:05d}.png"
            _img(base / folder / rgb, size=(64, 48))
            depth = RNG.integers(500, 9000, (48, 64))
            depth[:5] = 0  # invalid rows
            _png16(base / folder / dep, depth)
            rows.append(f"{prefix}{rgb} {prefix}{dep} 518.8579")
        (base / f"nyudepthv2_{split}_files_with_gt.txt").write_text("\n".join(rows) + "\n")


def write_kitti(root):
    base = root / "kitti"
    image = "2011_09_26/2011_09_26_drive_0002_sync/image_02/data/0000000069.png"
    gt = "2011_09_26_drive_0002_sync/proj_depth/groundtruth/image_02/0000000069.png"
    _img(base / "raw" / image, size=(124, 38))
    _img(base / "raw" / image.replace("69", "70"), size=(124, 38))
    _png16(base / "data_depth_annotated" / gt, RNG.integers(0, 80 * 256, (38, 124)))
    (base / "eigen_test_files_with_gt.txt").write_text(
        f"{image} {gt} 721.5377\n{image.replace('69', '70')} None 721.5377\n")


def write_spair(root):
    base = root / "SPair-71k"
    for name in ("2008_000001.jpg", "2008_000002.jpg"):
        _img(base / "JPEGImages" / "cat" / name, size=(60, 40))
    pair = {"src_imname": "2008_000001.jpg", "trg_imname": "2008_000002.jpg", "category": "cat",
            "src_kps": [[5, 5], [30, 20], [70, 10]], "trg_kps": [[6, 6], [31, 21], [10, 10]],
            "src_bndbox": [0, 0, 50, 40], "trg_bndbox": [0, 0, 50, 40], "viewpoint_variation": 0}
    (base / "PairAnnotation" / "test").mkdir(parents=True)
    (base / "PairAnnotation" / "test" / "000001-2008_000001-2008_000002:cat.json").write_text(json.dumps(pair))


def write_navi(root):
    """One object seen by two cameras 5 units apart along x (OpenGL: camera looks down -z, object at z = -50;
    NAVI's depth encoding 655350 / value cannot store depths below 10)."""
    scene = root / "navi" / "3d_dollhouse_sink" / "multiview-00-pixel_5"
    notes = []
    for i, tx in enumerate((0.0, -5.0)):
        _img(scene / "images" / f"{i:03d}.jpg", size=(32, 24))
        _png16(scene / "depth" / f"{i:03d}.png", np.full((24, 32), 655350 / 50.0))
        mask = np.zeros((24, 32), np.uint8)
        mask[4:20, 6:26] = 255
        (scene / "masks").mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(scene / "masks" / f"{i:03d}.png")
        notes.append({"object_id": "3d_dollhouse_sink", "filename": f"{i:03d}.jpg", "image_size": [24, 32],
                      "camera": {"q": [1, 0, 0, 0], "t": [tx, 0, -50.0], "focal_length": 30.0,
                                 "camera_model": "pixel_5"}, "split": "val"})
    (scene / "annotations.json").write_text(json.dumps(notes))
    pairs = root / "navi" / "custom_splits" / "pairwise_pixel_correspondences" / "pairs-multiview.txt"
    pairs.parent.mkdir(parents=True)
    pairs.write_text("3d_dollhouse_sink/multiview-00-pixel_5/images/000.jpg "
                     "3d_dollhouse_sink/multiview-00-pixel_5/images/001.jpg 5.7\n")


def write_refer(root):
    """RefCOCO (UNC splits) and RefCOCOg (UMD splits) as the refer API reads them; RefCOCO+ is left out. Two
    COCO images; image 1 holds two refs, one with two sentences; a ref whose annotation is not in
    instances.json is skipped and counted."""
    files = {1: "COCO_train2014_000000000001.jpg", 2: "COCO_train2014_000000000002.jpg"}
    for i, name in files.items():
        _img(root / "images" / "mscoco" / "images" / "train2014" / name, size=(64, 48))
    instances = {"images": [{"id": i, "file_name": n, "height": 48, "width": 64} for i, n in files.items()],
                 "annotations": [{"id": 10, "image_id": 1, "bbox": [4.0, 6.0, 20.0, 10.0], "category_id": 1},
                                 {"id": 11, "image_id": 1, "bbox": [30.0, 2.0, 30.0, 40.0], "category_id": 1},
                                 {"id": 12, "image_id": 2, "bbox": [0.0, 0.0, 64.0, 48.0], "category_id": 2}],
                 "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}]}

    def ref(rid, ann, image, split, *sents):
        return {"ref_id": rid, "ann_id": ann, "image_id": image, "split": split, "category_id": 1,
                "file_name": f"{files[image][:-4]}_{ann}.jpg", "sent_ids": list(range(len(sents))),
                "sentences": [{"tokens": s.split(), "raw": s.upper(), "sent": s, "sent_id": k}
                              for k, s in enumerate(sents)]}

    for dataset, split_by, splits in (("refcoco", "unc", ("val", "testA", "testB")),
                                      ("refcocog", "umd", ("val", "test"))):
        refs = [ref(1, 10, 1, "val", "man on the left", "left guy"), ref(2, 11, 1, "val", "right man"),
                ref(3, 99, 2, "val", "no such annotation"), ref(4, 12, 2, "train", "the dog")]
        refs += [ref(5 + k, 12, 2, s, f"dog in {s}") for k, s in enumerate(splits[1:])]
        (root / dataset).mkdir(parents=True)
        with open(root / dataset / f"refs({split_by}).p", "wb") as f:
            pickle.dump(refs, f, protocol=2)
        (root / dataset / "instances.json").write_text(json.dumps(instances))


@pytest.fixture(scope="module")
def real_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("benchmarks")
    for write in (write_imagenet, write_coco, write_ade20k, write_nyu, write_kitti, write_spair, write_navi,
                  write_refer):
        write(root)
    return root


def test_refcoco_queries_are_every_sentence_with_its_refs_xyxy_box(real_root):
    split = load_refcoco(real_root, "refcoco", "val")
    assert split.name == "refcoco-val" and split.images == [
        str(real_root / "images/mscoco/images/train2014/COCO_train2014_000000000001.jpg")]
    assert split.phrases == [[("man on the left", [4.0, 6.0, 24.0, 16.0]), ("left guy", [4.0, 6.0, 24.0, 16.0]),
                              ("right man", [30.0, 2.0, 60.0, 42.0])]]
    assert split.skipped["grounding/no_annotation"] == 1
    assert load_refcoco(real_root, "refcoco", "testB").phrases == [[("dog in testB", [0.0, 0.0, 64.0, 48.0])]]
    assert load_refcoco(real_root, "refcocog", "test").phrases == [[("dog in test", [0.0, 0.0, 64.0, 48.0])]]
    with pytest.raises(MTVError, match="refcocog: no split 'testA'; choose one of val, test"):
        load_refcoco(real_root, "refcocog", "testA")


def test_a_refs_pickle_that_would_build_objects_is_refused(tmp_path):
    (tmp_path / "images" / "mscoco" / "images" / "train2014").mkdir(parents=True)
    (tmp_path / "refcoco").mkdir()
    (tmp_path / "refcoco" / "instances.json").write_text('{"images": [], "annotations": []}')
    (tmp_path / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([{"split": "val", "obj": Exception("x")}]))
    with pytest.raises(MTVError, match=r"refs\(unc\).p: not a refer refs pickle \(refs hold only plain data"):
        load_refcoco(tmp_path, "refcoco", "val")


def test_imagenet_class_folders_and_shipped_names(real_root):
    names = class_names()
    assert len(names) == 1000 and names[0] == "tench" and names[-1] == "toilet paper"
    split = load_imagenet(real_root)
    assert split.labels == [0, 1, 999] and split.classes == names
    assert len(split.templates) == 80 and split.template_set == "openai-imagenet-80"
    assert all(open_image(p).mode == "RGB" for p in split.images)  # RGBA and greyscale converted


def test_coco_karpathy_keeps_the_test_split(real_root):
    split = load_coco_karpathy(real_root)
    assert len(split) == 2 and len(split.captions[0]) == 5 and split.captions[1][0] == "caption 2 0"


def test_ade20k_zero_is_ignored(real_root):
    split = load_ade20k(real_root, "validation")
    m = split.seg(0)
    assert len(split) == 2 and m.shape == (32, 48) and m.min() >= -1 and m.max() <= 2 and len(split.seg_classes) == 150


def test_nyu_and_kitti_depth_units_and_invalid_pixels(real_root):
    nyu = load_nyuv2(real_root, "test")
    d = nyu.depth(0)
    assert np.isnan(d[:5]).all() and 0.5 <= np.nanmin(d) and np.nanmax(d) < 9.0
    assert nyu.depth_protocol.crop == "none" and len(load_nyuv2(real_root, "train")) == 2  # Probe3D: no crop
    kitti = load_kitti(real_root)
    assert kitti.depth(0).shape == (38, 124) and kitti.depth_protocol.max_depth == 80
    with pytest.raises(Exception, match="no_ground_truth"):
        kitti.depth(1)


def test_spair_counts_keypoints_outside_the_image(real_root):
    split = load_spair(real_root)
    assert len(split.images) == 2 and len(split.sem_pairs) == 1
    assert len(split.sem_pairs[0].pts_a) == 2 and split.skipped["corr_sem/keypoint_outside"] == 1


def test_navi_ground_truth_matches_shift_with_the_camera(real_root):
    split = load_navi(real_root)
    (pair,) = split.geo_pairs
    # camera 2 sits 5 to the right at depth 50 with f = 30: object points move 3 px left in its image
    np.testing.assert_allclose(pair.pts_b - pair.pts_a, np.tile([-3.0, 0.0], (len(pair.pts_a), 1)), atol=1e-6)


@pytest.mark.parametrize("loader, expected", [
    (load_imagenet, "imagenet/val"), (load_coco_karpathy, "coco/dataset_coco.json"),
    (load_ade20k, "ADEChallengeData2016"), (load_nyuv2, "nyu"), (load_kitti, "kitti"),
    (load_spair, "SPair-71k"), (load_navi, "navi"), (load_refcoco, "refcoco")])
def test_missing_data_is_a_one_line_error_naming_the_path(tmp_path, loader, expected):
    with pytest.raises(MTVError) as e:
        loader(tmp_path)
    assert expected in str(e.value) and "\n" not in str(e.value)


def test_malformed_data_is_a_one_line_error(tmp_path):
    (tmp_path / "coco").mkdir()
    (tmp_path / "coco" / "dataset_coco.json").write_text('{"images": [{"split": "test"}]}')
    with pytest.raises(MTVError, match="not a Karpathy split file"):
        load_coco_karpathy(tmp_path)
    (tmp_path / "imagenet" / "val" / "n1").mkdir(parents=True)
    with pytest.raises(MTVError, match="1 class folders, expected 1000"):
        load_imagenet(tmp_path)
    (tmp_path / "kitti").mkdir()
    (tmp_path / "kitti" / "eigen_test_files_with_gt.txt").write_text("only_one_field\n")
    with pytest.raises(MTVError, match=r"eigen_test_files_with_gt.txt:1: expected 2 fields"):
        load_kitti(tmp_path)


def test_real_suite_runs_every_benchmark_it_finds(eval_model_with_heads, real_root, tmp_path, monkeypatch):
    # 2 of OpenAI's templates instead of 80: 1000 x 80 prompts would cost the micro model minutes on 2 cores
    monkeypatch.setattr("mtv.eval.benchmarks.imagenet.openai_imagenet_templates",
                        lambda: ["a photo of a {}.", "a bad photo of a {}."])
    report = run_suite(eval_model_with_heads, real_root, tmp_path, "real", epochs=1, progress=False)
    m = report["metrics"]
    for key in ("zeroshot_top1", "retrieval_i2t_r1", "seg_miou", "depth_rmse", "corr_geo_recall", "corr_sem_pck",
                "depth_head_absrel", "depth_head_kitti_absrel"):
        assert key in m, key
    for key in ("grounding_refcoco_val_acc50", "grounding_refcoco_testA_acc50", "grounding_refcocog_test_acc50"):
        assert key in m, key
    assert report["config"]["grounding_refcoco_val"]["queries"] == 3
    # RefCOCO+ is not on disk: the grounding probe runs on the others and names each missing split
    assert set(report["not_run"]) == {f"grounding_refcocoplus_{s}" for s in ("val", "testA", "testB")}
    assert "refcoco+: not found" in report["not_run"]["grounding_refcocoplus_val"]
    assert report["config"]["zeroshot"]["template_set"] == "openai-imagenet-80"
    assert report["config"]["depth"]["crop"] == "none" and report["config"]["depth_head_kitti"]["crop"] == "garg"
    assert report["skipped"]["kitti-eigen-test/depth/no_ground_truth"] == 1
    # NAVI is scored by Probe3D's protocol alone: corr_geo_recall is its 3-D recall at 2 cm
    assert list(report["config"]["corr_geo"]["protocols"]) == ["corr_geo_recall*"]
    assert report["config"]["corr_geo"]["protocols"]["corr_geo_recall*"]["headline"] == "3-D recall at 2 cm"
    assert "corr_geo_recall_3d_2" in m and "corr_geo_recall_ratio" not in m


def test_real_preset_on_a_folder_without_benchmarks_and_an_explicit_probe_both_fail(eval_model_dir, tmp_path):
    (tmp_path / "data").mkdir()
    with pytest.raises(MTVError, match="none of the probes could run .*ADEChallengeData2016: not found"):
        run_suite(eval_model_dir, tmp_path / "data", tmp_path / "out", "real", progress=False)
    with pytest.raises(MTVError, match="nyu: not found"):
        run_suite(eval_model_dir, tmp_path / "data", tmp_path / "out", "depth", progress=False)


def test_geo_pairs_carry_their_3d_truth(real_root, world_eval_splits):
    from mtv.eval.benchmarks.world import load_world
    from mtv.eval.correspondence import back_project

    (pair,) = load_navi(real_root).geo_pairs
    assert pair.geo.angle == pytest.approx(0.0, abs=1e-6) and pair.geo.unit == "cm"  # camera 2 only moves
    np.testing.assert_allclose(back_project(pair.pts_b, *pair.geo.target()), pair.geo.xyz_b, rtol=0.02)
    pairs = load_world(str(world_eval_splits[1]), "val", pairs=True).geo_pairs
    assert pairs and all(0 <= p.geo.angle <= 180 for p in pairs) and pairs[0].geo.step == 0.1
    for p in pairs:  # B's depth at the true pixel agrees with the true point (the visibility test's 2 %)
        np.testing.assert_allclose(back_project(p.pts_b, *p.geo.target())[:, 2], p.geo.xyz_b[:, 2], rtol=0.021)
