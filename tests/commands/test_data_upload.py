"""`cyclegan data upload` copies a dataset's images only: never the file a link out of the folder points
at, nor a file named like an image that is none, each left behind with a counted warning naming it."""
import logging
import shutil

from cyclegan.cli import main


def test_a_link_out_of_the_folder_and_a_fake_image_stay_behind_with_their_reason(tiny_pair, tmp_path, s3,
                                                                                 caplog):
    root = tmp_path / "ds"
    for split in ("trainA", "trainB"):
        shutil.copytree(tiny_pair / split, root / split)
    secret = tmp_path / "home" / ".aws" / "credentials"  # outside the folder being uploaded
    secret.parent.mkdir(parents=True)
    secret.write_text("[default]\naws_secret_access_key = cg-fake-secret\n")
    (root / "trainA" / "cover.png").symlink_to(secret)
    (root / "trainB" / "notes.png").write_text("a note, named like an image")
    kept = sorted((tiny_pair / "trainA").glob("*.png"))[0]
    (root / "trainA" / "again.png").symlink_to(root / "trainA" / kept.name)  # a link inside: copied
    s3.mkdir("upload-links")
    with caplog.at_level(logging.WARNING, logger="cyclegan"):
        assert main(["data", "upload", str(root), "s3://upload-links/ds"]) == 0
    keys = [k for k in s3.find("upload-links/ds") if not k.endswith("/")]
    assert not [k for k in keys if k.endswith(("/cover.png", "/notes.png"))], keys
    assert all(b"cg-fake-secret" not in s3.cat(k) for k in keys)
    assert s3.cat("upload-links/ds/trainA/again.png") == kept.read_bytes()
    assert len(keys) == len(list((tiny_pair / "trainA").iterdir())) + len(list((tiny_pair / "trainB").iterdir())) + 1
    assert "skipped 2 file(s), not copied" in caplog.text
    assert f"{root / 'trainA' / 'cover.png'}: links to a file outside {root}" in caplog.text
    assert f"{root / 'trainB' / 'notes.png'}: not an image (its first bytes are no image format)" in caplog.text
