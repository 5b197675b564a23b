"""Dataset layouts on miniature generated folder trees, and on the real PACS copy if present."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from activevlm.data import ImageDataset, available_layouts, load_dataset
from activevlm.data.classlists import imagenet_classnames, imagenet_wnids, read_list
from activevlm.data.splits import assign_splits, parse_ratios, split_counts

OFFICEHOME = list(read_list("officehome_classes"))
PACS_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "pacs"
_BYTES: dict[str, bytes] = {}


def _image_bytes(suffix: str) -> bytes:
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[suffix.lower()]
    if fmt not in _BYTES:
        buffer = io.BytesIO()
        Image.new("RGB", (4, 4), (200, 30, 30)).save(buffer, format=fmt)
        _BYTES[fmt] = buffer.getvalue()
    return _BYTES[fmt]


def make_tree(root: Path, relpaths: list[str]) -> Path:
    """Write a tiny image at each relative path under root (text for non-image suffixes)."""
    for rel in relpaths:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        suffix = path.suffix.lower()
        is_image = suffix in {".jpg", ".jpeg", ".png", ".bmp"}
        path.write_bytes(_image_bytes(suffix) if is_image else b"not an image")
    return root


def per_class(prefix: str, n: int, ext: str = ".jpg") -> list[str]:
    return [f"{prefix}/img_{i:03d}{ext}" for i in range(n)]


# --------------------------------------------------------------------------- splits


def test_split_counts_match_brute_force_l1_optimum():
    rng = np.random.default_rng(0)
    for n in range(0, 40):
        ratios = rng.dirichlet([1.0, 1.0, 1.0])
        counts = split_counts(n, ratios)
        exact = n * ratios
        assert sum(counts) == n
        assert np.all(np.abs(np.array(counts) - exact) < 1)
        best = min(sum(abs(a - e) for a, e in zip((a, b, n - a - b), exact, strict=True))
                   for a in range(n + 1) for b in range(n + 1 - a))
        assert abs(np.abs(np.array(counts) - exact).sum() - best) < 1e-9


def test_parse_ratios_normalises_and_rejects_bad_values():
    assert parse_ratios("64/16/20") == pytest.approx((0.64, 0.16, 0.20))
    assert parse_ratios([7, 1, 2]) == pytest.approx((0.7, 0.1, 0.2))
    for bad in ("1/2", [0.5, -0.1, 0.6], "a,b,c", [0, 0, 0]):
        with pytest.raises(ValueError, match="split ratios"):
            parse_ratios(bad)


def test_assign_splits_ignores_row_order_and_other_groups():
    items = pd.DataFrame({"sample_id": [f"d/c{i % 3}/{i}.jpg" for i in range(90)],
                          "label": [i % 3 for i in range(90)], "domain": "d"})
    base = assign_splits(items, (0.64, 0.16, 0.2), seed=5)
    by_id = dict(zip(items["sample_id"], base, strict=True))
    shuffled = items.sample(frac=1.0, random_state=1).reset_index(drop=True)
    again = assign_splits(shuffled, (0.64, 0.16, 0.2), seed=5)
    assert dict(zip(shuffled["sample_id"], again, strict=True)) == by_id
    other = pd.DataFrame({"sample_id": [f"e/x/{i}.jpg" for i in range(20)], "label": 0,
                          "domain": "e"})
    grown = pd.concat([items, other], ignore_index=True)
    grown_split = assign_splits(grown, (0.64, 0.16, 0.2), seed=5)
    assert list(grown_split[: len(items)]) == list(base)
    with pytest.raises(ValueError, match="seed"):
        assign_splits(items, (0.64, 0.16, 0.2), seed=-1)


# --------------------------------------------------------------------------- OfficeHome


def officehome_tree(root: Path, real_world: str = "Real World") -> Path:
    rel = []
    for domain in ("Art", "Clipart", "Product", real_world):
        rel += per_class(f"{domain}/Alarm_Clock", 25) + per_class(f"{domain}/Mug", 25, ".PNG")
    rel += ["Art/Mug/.hidden.jpg", "Art/Mug/notes.txt", "Art/.cache/x.jpg", "ImageInfo.csv"]
    return make_tree(root, rel)


def test_officehome_labels_domains_and_default_split(tmp_path):
    ds = load_dataset(f"officehome:{officehome_tree(tmp_path)}")
    assert isinstance(ds, ImageDataset) and ds.name == "officehome"
    assert ds.classnames == OFFICEHOME and len(ds.classnames) == 65
    items = ds.items
    assert len(items) == 200  # hidden files, hidden folders and non-images are skipped
    assert items["label"].dtype == np.int64
    assert set(items["domain"]) == {"Art", "Clipart", "Product", "Real World"}
    row = items[items["sample_id"] == "Real World/Mug/img_003.PNG"].iloc[0]
    assert row["label"] == OFFICEHOME.index("Mug") and row["domain"] == "Real World"
    assert row["path"] == str(tmp_path / "Real World" / "Mug" / "img_003.PNG")
    assert Path(row["path"]).is_absolute()
    counts = items.groupby(["domain", "label", "split"]).size().unstack()
    assert (counts[["train", "val", "test"]] == [16, 4, 5]).all().all()  # 64/16/20 of 25
    assert ds.description["split_seed"] == 0
    assert ds.description["split_ratios"] == pytest.approx([0.64, 0.16, 0.20])
    assert ds.load_image(0).mode == "RGB"


def test_officehome_split_is_seeded_and_ratios_option(tmp_path):
    root = officehome_tree(tmp_path)
    a = load_dataset(f"officehome:{root}", seed=3).items
    b = load_dataset(f"officehome:{root}", seed=3).items
    c = load_dataset(f"officehome:{root}", seed=4).items
    assert a["split"].tolist() == b["split"].tolist()
    assert a["split"].tolist() != c["split"].tolist()
    assert (a["split"].value_counts() == c["split"].value_counts()).all()
    d = load_dataset(f"officehome:{root}", ratios="50/25/25", seed=3)
    per_group = d.items.groupby(["domain", "label", "split"]).size().unstack()
    assert (per_group[["train", "val", "test"]] == [13, 6, 6]).all().all()
    assert d.description["split_ratios"] == pytest.approx([0.5, 0.25, 0.25])
    assert d.description["split_seed"] == 3


def test_officehome_accepts_real_world_with_underscore(tmp_path):
    ds = load_dataset(f"officehome:{officehome_tree(tmp_path, 'Real_World')}")
    assert set(ds.items["domain"]) == {"Art", "Clipart", "Product", "Real World"}
    assert ds.items["sample_id"].str.startswith("Real_World/").sum() == 50


def test_officehome_bad_layouts_name_the_expected_layout(tmp_path):
    expected = "officehome: expected PATH/<Art|Clipart|Product|Real World>/<class>/<image>"
    make_tree(tmp_path / "flat", ["a.jpg"])
    with pytest.raises(FileNotFoundError, match=expected) as error:
        load_dataset(f"officehome:{tmp_path / 'flat'}")
    assert "a.jpg" in str(error.value)  # says what it found
    with pytest.raises(FileNotFoundError, match=expected):
        load_dataset(f"officehome:{tmp_path / 'missing'}")
    make_tree(tmp_path / "typo", per_class("Art/Mug", 2) + per_class("RealWorld/Mug", 2))
    with pytest.raises(ValueError, match="unknown domain folders 'RealWorld'"):
        load_dataset(f"officehome:{tmp_path / 'typo'}")
    make_tree(tmp_path / "cls", per_class("Art/Alarm Clock", 2))
    with pytest.raises(ValueError, match="unknown class folders 'Alarm Clock'"):
        load_dataset(f"officehome:{tmp_path / 'cls'}")
    (tmp_path / "empty" / "Art" / "Mug").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="no images"):
        load_dataset(f"officehome:{tmp_path / 'empty'}")


def test_officehome_wrapper_folder_of_the_official_zip(tmp_path):
    officehome_tree(tmp_path / "OfficeHomeDataset_10072016")
    ds = load_dataset(f"officehome:{tmp_path}")
    assert ds.root == tmp_path / "OfficeHomeDataset_10072016" and len(ds) == 200


# --------------------------------------------------------------------------- PACS

PACS_CLASSES = ["dog", "elephant", "giraffe", "guitar", "horse", "house", "person"]


def test_pacs_at_domain_folder_or_parent(tmp_path):
    rel = [f"PACS/{d}/{c}/{i}.jpg" for d in ("art_painting", "cartoon", "photo", "sketch")
           for c in ("dog", "person") for i in range(5)]
    make_tree(tmp_path, rel)
    parent = load_dataset(f"pacs:{tmp_path}")
    direct = load_dataset(f"pacs:{tmp_path / 'PACS'}")
    assert parent.classnames == PACS_CLASSES and parent.root == tmp_path / "PACS"
    pd.testing.assert_frame_equal(parent.items, direct.items)
    assert len(parent) == 40
    person = parent.items[parent.items["sample_id"] == "sketch/person/3.jpg"].iloc[0]
    assert person["label"] == 6 and person["domain"] == "sketch"
    assert set(parent.items["split"]) == {"train", "val", "test"}
    with pytest.raises(FileNotFoundError, match=r"pacs: expected PATH/<art_painting\|cartoon"):
        load_dataset(f"pacs:{tmp_path / 'PACS' / 'photo'}")


@pytest.mark.skipif(not (PACS_REAL / "PACS").is_dir(), reason="no PACS copy beside the project")
def test_real_pacs_counts_and_split_sizes():
    ds = load_dataset(f"pacs:{PACS_REAL}")
    items = ds.items
    assert ds.classnames == PACS_CLASSES and len(items) == 9991
    per_domain = items["domain"].value_counts().to_dict()
    assert per_domain == {"art_painting": 2048, "cartoon": 2344, "photo": 1670, "sketch": 3929}
    # Per (domain, class): each split within one image of 64/16/20 (largest remainders).
    groups = items.groupby(["domain", "label", "split"]).size().unstack(fill_value=0)
    sizes = groups[["train", "val", "test"]].to_numpy()
    exact = sizes.sum(axis=1, keepdims=True) * np.array([0.64, 0.16, 0.20])
    assert np.all(np.abs(sizes - exact) < 1)
    table = items.groupby(["domain", "split"]).size().unstack()[["train", "val", "test"]]
    assert table.to_dict("index") == {
        "art_painting": {"train": 1310, "val": 328, "test": 410},
        "cartoon": {"train": 1500, "val": 375, "test": 469},
        "photo": {"train": 1069, "val": 267, "test": 334},
        "sketch": {"train": 2514, "val": 629, "test": 786},
    }
    other = load_dataset(f"pacs:{PACS_REAL}", seed=1).items
    assert (other["split"] != items["split"]).mean() > 0.3  # a different draw, same sizes
    assert other.groupby(["domain", "split"]).size().equals(items.groupby(
        ["domain", "split"]).size())


# --------------------------------------------------------------------------- ImageNet family


def timm_info() -> Path:
    """timm's shipped wnid lists: an independent reference (found without importing timm)."""
    spec = importlib.util.find_spec("timm")
    if spec is None or spec.origin is None:
        pytest.skip("timm not installed")
    return Path(spec.origin).parent / "data" / "_info"


def test_shipped_imagenet_lists_match_their_sources():
    info = timm_info()
    open_clip = pytest.importorskip("open_clip.zero_shot_metadata")
    assert imagenet_wnids() == (info / "imagenet_synsets.txt").read_text().split()
    assert imagenet_classnames() == list(open_clip.IMAGENET_CLASSNAMES)


def test_imagenet_val_wnid_folders(tmp_path):
    make_tree(tmp_path, ["val/n01440764/ILSVRC2012_val_00000293.JPEG",
                         "val/n15075141/a.JPEG", "val/n15075141/b.jpeg", "train/README.txt"])
    for spec in (f"imagenet:{tmp_path}", f"imagenet:{tmp_path / 'val'}"):
        ds = load_dataset(spec)
        assert ds.items["label"].tolist() == [0, 999, 999]
        assert ds.classnames[0] == "tench" and len(ds.classnames) == 1000
        assert ds.class_subset is None and ds.items["split"].isna().all()
        assert ds.items["sample_id"].iloc[0] == "n01440764/ILSVRC2012_val_00000293.JPEG"
    make_tree(tmp_path / "bad", ["n01440764/a.jpg", "n99999999/b.jpg"])
    with pytest.raises(ValueError, match="imagenet: unknown class folders 'n99999999'"):
        load_dataset(f"imagenet:{tmp_path / 'bad'}")


@pytest.mark.parametrize("variant", ["r", "a"])
def test_imagenet_r_a_map_to_1000_class_ids(tmp_path, variant):
    info = timm_info()
    subset_wnids = (info / f"imagenet_{variant}_synsets.txt").read_text().split()
    reference_ids = [int(x) for x in (info / f"imagenet_{variant}_indices.txt").read_text()
                     .split()]
    picked = [subset_wnids[0], subset_wnids[57], subset_wnids[-1]]
    make_tree(tmp_path, [f"imagenet-{variant}/{w}/{i}.jpg" for w in picked for i in range(2)])
    ds = load_dataset(f"imagenet-{variant}:{tmp_path}")
    expected = [reference_ids[0]] * 2 + [reference_ids[57]] * 2 + [reference_ids[-1]] * 2
    assert ds.items["label"].tolist() == expected
    assert ds.classnames == imagenet_classnames()
    assert ds.class_subset == sorted(reference_ids) and len(ds.class_subset) == 200
    assert ds.description["class_subset"] == ds.class_subset
    outside = next(w for w in imagenet_wnids() if w not in set(subset_wnids))
    make_tree(tmp_path / "bad", [f"{subset_wnids[0]}/a.jpg", f"{outside}/b.jpg"])
    with pytest.raises(ValueError, match=f"unknown class folders '{outside}'.*200 ImageNet-"):
        load_dataset(f"imagenet-{variant}:{tmp_path / 'bad'}")


def test_imagenet_sketch_and_v2(tmp_path):
    make_tree(tmp_path / "s", ["sketch/n01443537/sketch_1.JPEG", "sketch/n01440764/x.png"])
    sketch = load_dataset(f"imagenet-sketch:{tmp_path / 's'}")
    assert sketch.items["label"].tolist() == [0, 1] and sketch.classnames[1] == "goldfish"
    make_tree(tmp_path / "v2", ["0/a.jpeg", "17/b.jpeg", "999/c.jpeg", "999/d.jpeg"])
    v2 = load_dataset(f"imagenet-v2:{tmp_path / 'v2'}")
    assert v2.items["label"].tolist() == [0, 17, 999, 999]
    assert v2.classnames == imagenet_classnames()
    make_tree(tmp_path / "v2bad", ["0/a.jpeg", "1000/b.jpeg"])
    with pytest.raises(ValueError, match=r"imagenet-v2: unknown class folders '1000'.*0\.\.999"):
        load_dataset(f"imagenet-v2:{tmp_path / 'v2bad'}")


# --------------------------------------------------------------------------- folder


def test_folder_layout_classes_domains_and_optional_split(tmp_path):
    make_tree(tmp_path / "plain", per_class("zebra", 3) + per_class("ant", 2, ".bmp"))
    plain = load_dataset(f"folder:{tmp_path / 'plain'}")
    assert plain.classnames == ["ant", "zebra"]
    assert plain.items["label"].tolist() == [0, 0, 1, 1, 1]
    assert plain.items["domain"].isna().all() and plain.items["split"].isna().all()
    make_tree(tmp_path / "dom", per_class("sun/cat", 10) + per_class("rain/dog", 10))
    dom = load_dataset(f"folder:{tmp_path / 'dom'}", domains=True, split=True, seed=2)
    assert dom.classnames == ["cat", "dog"]
    assert dom.items.groupby("domain")["label"].unique().map(list).to_dict() == {
        "rain": [1], "sun": [0]}
    assert dom.items["split"].value_counts().to_dict() == {"train": 12, "test": 4, "val": 4}
    with pytest.raises(ValueError, match="ratios/seed need split=True"):
        load_dataset(f"folder:{tmp_path / 'plain'}", seed=1)
    with pytest.raises(FileNotFoundError, match=r"folder: expected PATH/<class>/<image>"):
        load_dataset(f"folder:{tmp_path / 'nowhere'}")


# --------------------------------------------------------------------------- manifest


def test_manifest_csv_with_names_relative_paths_and_columns(tmp_path):
    make_tree(tmp_path / "imgs", ["a.jpg", "b.png", "sub/c.jpg", "d.jpg"])
    make_tree(tmp_path.parent / f"{tmp_path.name}_outside", ["e.jpg"])
    outside = tmp_path.parent / f"{tmp_path.name}_outside" / "e.jpg"
    (tmp_path / "classnames.txt").write_text("zebra\nant\nbee\n")
    pd.DataFrame({
        "path": ["imgs/a.jpg", "imgs/b.png", "imgs/sub/c.jpg", "imgs/d.jpg", str(outside)],
        "label": ["bee", "zebra", None, "ant", "bee"],
        "domain": ["x", "x", "y", "y", None],
        "split": ["train", "test", "train", None, "val"],
        "caption": ["a bee", None, "c", "d", "e"],
    }).to_csv(tmp_path / "list.csv", index=False)
    ds = load_dataset(f"manifest:{tmp_path / 'list.csv'}")
    assert ds.classnames == ["zebra", "ant", "bee"]  # order of classnames.txt
    assert ds.items["label"].tolist() == [2, 0, -1, 1, 2]
    assert ds.items["sample_id"].tolist()[:4] == ["imgs/a.jpg", "imgs/b.png", "imgs/sub/c.jpg",
                                                  "imgs/d.jpg"]
    assert ds.items["sample_id"].iloc[4] == outside.as_posix()
    assert ds.items["path"].iloc[2] == str(tmp_path / "imgs" / "sub" / "c.jpg")
    assert ds.items["domain"].tolist() == ["x", "x", "y", "y", None]
    assert ds.items["split"].tolist() == ["train", "test", "train", None, "val"]
    assert ds.items["caption"].tolist() == ["a bee", None, "c", "d", "e"]
    assert ds.load_image(1).size == (4, 4)


def test_manifest_parquet_int_labels_and_names_from_labels(tmp_path):
    make_tree(tmp_path, ["a.jpg", "b.jpg", "c.jpg"])
    pd.DataFrame({"path": ["a.jpg", "b.jpg", "c.jpg"], "label": [1, 0, 1]}).to_parquet(
        tmp_path / "m.parquet")
    ds = load_dataset(f"manifest:{tmp_path / 'm.parquet'}", classnames=["cat", "dog"])
    assert ds.items["label"].tolist() == [1, 0, 1] and ds.classnames == ["cat", "dog"]
    assert ds.items["domain"].isna().all() and "caption" not in ds.items.columns
    with pytest.raises(ValueError, match="integer labels need class names"):
        load_dataset(f"manifest:{tmp_path / 'm.parquet'}")
    with pytest.raises(ValueError, match=r"label 1 is not an integer in \[-1, 1\)"):
        load_dataset(f"manifest:{tmp_path / 'm.parquet'}", classnames=["cat"])
    pd.DataFrame({"path": ["a.jpg", "b.jpg"], "label": ["pig", "cow"]}).to_csv(
        tmp_path / "n.csv", index=False)
    assert load_dataset(f"manifest:{tmp_path / 'n.csv'}").classnames == ["cow", "pig"]


def test_manifest_errors_name_the_problem(tmp_path):
    make_tree(tmp_path, ["a.jpg", "b.jpg"])
    pd.DataFrame({"path": ["a.jpg", "b.jpg"], "label": ["cat", "lion"]}).to_csv(
        tmp_path / "m.csv", index=False)
    with pytest.raises(ValueError, match=r"unknown class names 'lion' in column label"):
        load_dataset(f"manifest:{tmp_path / 'm.csv'}", classnames=["cat", "dog"])
    pd.DataFrame({"path": ["a.jpg", "gone.jpg"]}).to_csv(tmp_path / "g.csv", index=False)
    with pytest.raises(FileNotFoundError, match="1 listed images do not exist.*gone.jpg"):
        load_dataset(f"manifest:{tmp_path / 'g.csv'}", classnames=["cat"])
    pd.DataFrame({"file": ["a.jpg"]}).to_csv(tmp_path / "nopath.csv", index=False)
    with pytest.raises(ValueError, match=r"no column 'path' \(columns: \['file'\]\)"):
        load_dataset(f"manifest:{tmp_path / 'nopath.csv'}")
    pd.DataFrame({"path": ["a.jpg", "./a.jpg"]}).to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(ValueError, match="repeat an image.*'a.jpg'"):
        load_dataset(f"manifest:{tmp_path / 'dup.csv'}", classnames=["cat"])
    with pytest.raises(FileNotFoundError, match="manifest: expected FILE.csv or FILE.parquet"):
        load_dataset(f"manifest:{tmp_path / 'a.jpg'}")


# --------------------------------------------------------------------------- specs, demo


def test_spec_errors_and_unknown_options(tmp_path):
    assert {"folder", "manifest", "officehome", "pacs", "imagenet", "imagenet-r", "imagenet-a",
            "imagenet-sketch", "imagenet-v2", "demo"} <= set(available_layouts())
    with pytest.raises(ValueError, match="unknown dataset spec 'cifar:x'.*'officehome'"):
        load_dataset("cifar:x")
    with pytest.raises(ValueError, match="write folder:PATH"):
        load_dataset(str(tmp_path))
    with pytest.raises(ValueError, match="lacks a path"):
        load_dataset("pacs:")
    with pytest.raises(ValueError, match="takes no path"):
        load_dataset("demo:/somewhere")
    with pytest.raises(ValueError, match=r"has no options \['sead'\].*'seed'"):
        load_dataset(f"pacs:{tmp_path}", sead=1)


def test_image_dataset_checks_and_loads_rgb(tmp_path):
    Image.new("L", (3, 2), 7).save(tmp_path / "g.png")
    items = pd.DataFrame({"sample_id": ["g.png"], "path": [str(tmp_path / "g.png")],
                          "label": [0]})
    ds = ImageDataset("x", tmp_path, ["a"], items)
    assert ds.items.columns.tolist() == ["sample_id", "path", "label", "domain", "split"]
    image = ds.load_image(0)
    assert image.mode == "RGB" and image.size == (3, 2)
    with pytest.raises(ValueError, match=r"label 1 outside \[-1, 1\)"):
        ImageDataset("x", tmp_path, ["a"], items.assign(label=[1]))
    with pytest.raises(ValueError, match="sample_id not unique"):
        ImageDataset("x", tmp_path, ["a"], pd.concat([items, items]))


def test_tree_listing_is_sorted_and_case_insensitive_on_extensions(tmp_path):
    names = ["b.JPG", "a.Jpeg", "c.webp", "d.Bmp", "e.gif", "f.PNG"]
    for name in names:
        (tmp_path / "cls").mkdir(exist_ok=True)
        (tmp_path / "cls" / name).write_bytes(b"x")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.items["sample_id"].tolist() == [f"cls/{n}" for n in sorted(names)]  # gif too
    assert (ds.items["label"] == 0).all()
