"""Object-detection exports (COCO, Pascal VOC, YOLO, KITTI) and split-named class folders are refused, not trained.

A detection export holds images in ``train/`` and ``test/`` folders; read as an ImageFolder it would train a
train-vs-test classifier without a word.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from detection_exports import EXPORTS
from detection_exports import coco_export as _coco_export
from detection_exports import export_images as _images
from images import write_tree as _tree
from refusals import one_line as _one_line
from tlops.cli import main
from tlops.data.prepare import SplitConfig, check_dataset, prepare_data
from tlops.errors import TlopsError


@pytest.mark.parametrize("kind", sorted(EXPORTS))
def test_detection_export_refused(tmp_path: Path, kind: str) -> None:
    files, needles = EXPORTS[kind]
    data = _tree(tmp_path / "data", files)

    with pytest.raises(TlopsError) as error:
        check_dataset(str(data))

    _one_line(error, *needles, "object-detection export", "use --task object-detection", "<class>/<image>")
    with pytest.raises(TlopsError, match="object-detection export"):
        prepare_data(str(data), tmp_path / "out", SplitConfig(workers=1))
    assert not (tmp_path / "out").exists()


def test_detection_export_in_an_archive_refused(tmp_path: Path) -> None:
    archive = tmp_path / "export.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        for relpath, content in _coco_export().items():
            zipped.writestr(f"export/{relpath}", content)

    with pytest.raises(TlopsError) as error:
        check_dataset(str(archive))

    _one_line(error, "COCO", "export/test/_annotations.coco.json", "--task object-detection")


def test_split_named_folders_of_images_refused(tmp_path: Path) -> None:
    data = _tree(tmp_path / "data", _images("train", "valid", "test"))

    with pytest.raises(TlopsError) as error:
        check_dataset(str(data))

    _one_line(error, "named like splits (test/, train/, valid/)", "train/<class>/<image>")


def test_cli_refuses_detection_export_as_classification_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Asked to classify it, a detection export is refused, never trained as a "train vs test" classifier."""
    data = _tree(tmp_path / "data", _coco_export())

    status = main(
        ["prepare-data", "--data", str(data), "--output", str(tmp_path / "out"), "--task", "image-classification"]
    )

    assert status == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tlops: error: ") and "COCO" in lines[0], lines
    assert "--task object-detection" in lines[0]
    assert not (tmp_path / "out").exists()


def test_classification_data_with_other_json_and_xml_is_read(tmp_path: Path) -> None:
    """Metadata files that are no annotations (and a class named test beside others) do not trigger a refusal."""
    files = _images("cat", "dog", "test") | {
        "info.json": json.dumps({"images": 12, "source": "camera"}),
        "cat/notes.xml": "<notes><annotation>none</annotation></notes>",
        "settings.yaml": "names: [a, b]\n",
        "dog/labels.txt": "dog\n",
    }
    data = _tree(tmp_path / "data", files)

    layout = check_dataset(str(data))

    assert {f.label for f in layout.files} >= {"cat", "dog", "test"}
