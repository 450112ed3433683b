"""Files the long fuzz profile found that broke a reader (an exception other than a
:class:`~clinfuse.core.errors.ClinfuseError`), kept as plain examples in the fast suite."""

from __future__ import annotations

import pytest

from clinfuse.core.errors import DataError


@pytest.mark.parametrize("blob", [b"", b"\xff\xfe\xfa,slide_id,survival_months\nA,B,1\n"])
def test_dpsurv_label_csv_empty_or_not_utf8(tmp_path, blob):
    from clinfuse.methods.dpsurv.data import read_labels

    (tmp_path / "labels.csv").write_bytes(blob)
    with pytest.raises(DataError, match="cannot read"):
        read_labels(tmp_path / "labels.csv")


def test_ge_xml_with_an_unknown_encoding(tmp_path):
    from clinfuse.builders.meeti.default_data import read_ge_xml

    path = tmp_path / "ecg.xml"
    path.write_bytes(b'<?xml version="1.0" encoding="HSO-8859-1" ?>\r\n<CardiologyXML/>\r\n')
    with pytest.raises(DataError, match="unknown encoding"):
        read_ge_xml(path)
