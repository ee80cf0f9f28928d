"""Photos read upright and written back with their depth, greyscale, alpha, EXIF and ICC; race-free names;
stale temporary files; recursive listing; tiles whose memory does not grow with the photo."""

from __future__ import annotations

import io
import multiprocessing
import os
import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageCms, ImageOps

from face2scene_core.imageio import (claim_file, clean_stale_temps, encode_photo, list_images, load_photo,
                                     save_photo)
from face2scene_core.large_photo import AUTO_TILE_ABOVE, auto_tile_size, restore_array
from face2scene_core.training.data import default_datasets_dir

DATA = default_datasets_dir()  # shared/datasets beside the checkout, $FACE2SCENE_DATASETS, or beside its origin
FACE = DATA / "faces_identity/deepface/tests/unit/dataset/img55.jpg"


def _noise(shape, dtype=np.uint8, seed=0):
    top = 65535 if dtype == np.uint16 else 255
    return np.random.default_rng(seed).integers(0, top + 1, shape).astype(dtype)


def _srgb_icc() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010F] = "Face2Scene test camera"  # Make
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_like_pillow(tmp_path, orientation):
    arr = _noise((6, 10, 3))  # asymmetric, so every orientation gives different pixels
    f = tmp_path / "o.png"
    Image.fromarray(arr).save(f, exif=_exif(orientation))
    with Image.open(f) as im:
        expected = np.asarray(ImageOps.exif_transpose(im).convert("RGB"))
    photo = load_photo(f)
    assert np.array_equal(photo.rgb, expected)
    out = Image.open(io.BytesIO(encode_photo(photo.rgb, photo, "PNG")[0]))
    assert out.getexif()[0x0112] == 1, "the pixels are upright: the written orientation must be 1"
    assert out.getexif()[0x010F] == "Face2Scene test camera"


def test_sideways_phone_photo_comes_back_upright(tmp_path):
    upright = np.asarray(Image.open(FACE).convert("RGB"))
    f = tmp_path / "sideways.jpg"
    Image.fromarray(np.rot90(upright, 1)).save(f, quality=95, exif=_exif(6))  # stored rotated, tag says rotate
    photo = load_photo(f)
    assert photo.rgb.shape == upright.shape
    assert np.abs(photo.rgb.astype(int) - upright).mean() < 4  # only JPEG loss


@pytest.mark.parametrize("fmt,suffix", [("PNG", ".png"), ("JPEG", ".jpg"), ("WEBP", ".webp"), ("TIFF", ".tif")])
def test_exif_and_icc_profile_are_kept(tmp_path, fmt, suffix):
    icc = _srgb_icc()
    f = tmp_path / f"in{suffix}"
    Image.fromarray(_noise((32, 48, 3))).save(f, format=fmt, exif=_exif(1), icc_profile=icc)
    photo = load_photo(f)
    dest, notes = save_photo(tmp_path / f"out{suffix}", photo.rgb, photo)
    with Image.open(dest) as im:
        assert im.format == fmt and im.info.get("icc_profile") == icc
        assert im.getexif()[0x010F] == "Face2Scene test camera"
    assert notes == []


def test_alpha_is_carried_unchanged(tmp_path):
    rgba = _noise((40, 30, 4))
    f = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(f)
    photo = load_photo(f)
    assert photo.alpha is not None and photo.rgb.shape == (40, 30, 3)
    restored = 255 - photo.rgb
    dest, _ = save_photo(tmp_path / "o.png", restored, photo)
    out = np.asarray(Image.open(dest))
    assert out.shape == (40, 30, 4)
    assert np.array_equal(out[..., 3], rgba[..., 3]) and np.array_equal(out[..., :3], restored)


def test_16_bit_rgb_png_stays_16_bit_with_its_profile(tmp_path):
    deep = _noise((24, 36, 3), np.uint16)
    f = tmp_path / "d.png"
    cv2.imwrite(str(f), deep[..., ::-1])
    photo = load_photo(f)
    assert photo.bits == 16 and np.array_equal(photo.deep, deep)
    assert np.abs(photo.rgb.astype(int) - deep / 257).max() <= 0.51
    photo.icc = _srgb_icc()
    data, notes = encode_photo(photo.deep, photo, "PNG")
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    assert back.dtype == np.uint16 and np.array_equal(back[..., ::-1], deep)
    assert Image.open(io.BytesIO(data)).info.get("icc_profile") == photo.icc
    assert notes == []
    _, notes = encode_photo(photo.deep, photo, "JPEG")
    assert any("8-bit" in n for n in notes), "a format without 16 bits must say so"


def test_16_bit_greyscale_is_read_correctly_and_written_back(tmp_path):
    grey = (np.linspace(0, 65535, 64 * 80).reshape(64, 80)).astype(np.uint16)  # mostly above 255
    f = tmp_path / "g16.png"
    Image.fromarray(grey).save(f)
    assert Image.open(f).mode == "I;16"
    photo = load_photo(f)
    assert photo.grey and photo.bits == 16
    assert 100 < photo.rgb.mean() < 160, "16-bit grey must not clip to white"
    dest, _ = save_photo(tmp_path / "o.png", photo.deep, photo)
    with Image.open(dest) as im:
        assert im.mode == "I;16"
        assert np.array_equal(np.asarray(im), grey)


def test_greyscale_stays_greyscale(tmp_path):
    f = tmp_path / "g.jpg"
    Image.fromarray(_noise((30, 40))).save(f, quality=95)
    photo = load_photo(f)
    tinted = photo.rgb.copy()
    tinted[..., 0] = np.clip(tinted[..., 0].astype(int) + 20, 0, 255)  # a restorer's colour cast
    dest, _ = save_photo(tmp_path / "o.jpg", tinted, photo)
    assert Image.open(dest).mode == "L"


def _claimer(args):
    folder, tag, n = args
    return [claim_file(Path(folder) / "photo.png", f"{tag}-{i}".encode()).name for i in range(n)]


def test_two_processes_claiming_one_name_never_lose_or_share_a_write(tmp_path):
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(2) as pool:
        names = pool.map(_claimer, [(str(tmp_path), "a", 150), (str(tmp_path), "b", 150)])
    written = names[0] + names[1]
    assert len(written) == 300 and len(set(written)) == 300, "every write gets its own name"
    contents = sorted(f.read_bytes().decode() for f in tmp_path.iterdir())
    assert contents == sorted([f"a-{i}" for i in range(150)] + [f"b-{i}" for i in range(150)])


def test_only_our_stale_temp_files_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    ours = [tmp_path / ".x.png.a1b2c3d4.tmp", tmp_path / "sub" / ".y.jpg.zz_9xx0q.tmp"]
    theirs = [tmp_path / "notes.tmp", tmp_path / ".hidden", tmp_path / "x.png"]
    for f in ours + theirs:
        f.write_bytes(b"x" * 10)
    assert sorted(clean_stale_temps(tmp_path)) == sorted(ours)
    assert all(f.exists() for f in theirs)


def test_recursive_listing_cuts_symlink_loops_and_skips_the_output(tmp_path):
    img = _noise((8, 8, 3))
    for rel in ("a.png", "sub/b.png", "sub/deeper/c.jpg", "out/restored.png", ".cache/x.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img).save(tmp_path / rel)
    os.symlink(tmp_path, tmp_path / "sub" / "loop")
    found = [f.relative_to(tmp_path).as_posix() for f in list_images(tmp_path, recursive=True,
                                                                     exclude=[tmp_path / "out"])]
    assert found == ["a.png", "sub/b.png", "sub/deeper/c.jpg"]
    assert [f.name for f in list_images(tmp_path)] == ["a.png"]


class _IdentityRestorer:
    """Stands in for OneStepRestorer: returns its input, records the tile sizes it was given."""

    def __init__(self, multiple: int = 64) -> None:
        self.multiple, self.device, self.shapes = multiple, torch.device("cpu"), []

    def restore(self, lq, tokens=None, **_):
        self.shapes.append(tuple(lq.shape[-2:]))
        return lq.clone()


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_tiles_blend_back_to_the_exact_photo(dtype):
    img = _noise((700, 1000, 3), dtype)
    r = _IdentityRestorer(multiple=32)
    out = restore_array(r, img, tile_size=256, tile_overlap=48)
    assert out.dtype == dtype and np.array_equal(out, img), "weights must sum to one everywhere"
    assert max(max(s) for s in r.shapes) <= 256 and len(r.shapes) > 4


def test_automatic_tile_follows_the_model_and_memory_stays_bounded_by_a_strip():
    r = _IdentityRestorer(multiple=48)
    assert auto_tile_size(r, 1000, 1000) is None  # small photos whole
    tile = auto_tile_size(r, 8660, 5773)
    assert tile % 48 == 0 and tile <= 2048
    h, w = 8660, 5773  # 50 MP
    img = np.full((h, w, 3), 128, np.uint8)
    assert h * w > AUTO_TILE_ABOVE
    tracemalloc.start()
    out = restore_array(r, img)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert out.shape == img.shape and out[::997, ::991].min() == 128 and out[::997, ::991].max() == 128
    assert max(max(s) for s in r.shapes) <= tile
    photo = img.nbytes
    # the output photo + one strip of float accumulators, not float copies of the whole photo (4 x 12 bytes/px)
    assert peak < photo + 16 * tile * w * 4, f"peak {peak / 2**20:.0f} MiB for a {photo / 2**20:.0f} MiB photo"
