"""Tests for tpo_core.world.data (the committed Debian-descriptions dataset) and scripts/build_debian_data.py.

The committed file is checked for its checksum, leakage-free splits and split sizes; the build script's
parsing and processing run on small synthetic inputs, so nothing here reads ../shared or the network.
"""

import gzip
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tpo_core.world import data

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_debian_data", ROOT / "scripts" / "build_debian_data.py")
build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build)


@pytest.fixture(scope="module")
def records():
    """Every record of the committed file (all five fields), via the plain json parser."""
    with gzip.open(data.DEFAULT_PATH, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def doc(words, first="Shared opening paragraph of a family of related packages here"):
    """A synthetic document of at least 20 words whose first paragraph is ``first``."""
    return first + "\n" + " ".join(words.split() * 20)


# --- checksum --------------------------------------------------------------------------------------


def test_committed_file_matches_checksum_constant_and_sums_file():
    digest = hashlib.sha256(data.DEFAULT_PATH.read_bytes()).hexdigest()
    assert digest == data.DATA_SHA256
    sums = (data.DEFAULT_PATH.parent / "SHA256SUMS").read_text().split()
    assert sums == [data.DATA_SHA256, data.DEFAULT_PATH.name]


def test_checksum_mismatch_raises_before_parsing(tmp_path):
    corrupt = tmp_path / "descriptions.jsonl.gz"
    corrupt.write_bytes(data.DEFAULT_PATH.read_bytes()[:-1] + b"\0")
    with pytest.raises(ValueError, match="checksum mismatch.*expected sha256 " + data.DATA_SHA256):
        data.load_debian("test", path=corrupt)
    with pytest.raises(ValueError, match="got " + data.DATA_SHA256):
        data.load_debian("test", verify="0" * 64)
    with pytest.raises(ValueError, match="verify must be"):
        data.load_debian("test", verify="abc")


def test_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="build_debian_data"):
        data.load_debian("sft", path=tmp_path / "nope.jsonl.gz")


# --- the committed splits --------------------------------------------------------------------------


def test_load_debian_columns_and_sizes():
    sizes = {}
    for split in data.SPLITS:
        df = data.load_debian(split)
        assert list(df.columns) == ["package", "document", "summary", "group"]
        assert df.notna().all().all() and (df["summary"].str.strip() != "").all()
        words = df["document"].str.split().str.len()
        assert words.between(build.MIN_WORDS, build.MAX_WORDS).all()
        sizes[split] = (len(df), df["group"].nunique())
    total = sum(n for n, _ in sizes.values())
    assert total == 54_191
    assert 0.65 <= sizes["sft"][0] / total <= 0.75
    assert 0.16 <= sizes["online"][0] / total <= 0.24
    assert 0.07 <= sizes["test"][0] / total <= 0.13
    assert all(groups >= 1_000 for _, groups in sizes.values())


def test_no_group_stem_or_first_paragraph_crosses_splits(records):
    for key in (lambda r: r["group"], lambda r: build.name_stem(r["package"]),
                lambda r: build.para_key(r["document"])):
        split_of = {}
        for r in records:
            k = key(r)
            if k is not None:
                assert split_of.setdefault(k, r["split"]) == r["split"], (k, r["package"])
    assert all(r["split"] == build.split_of(r["group"]) for r in records)


@pytest.mark.parametrize("family", [
    ["0ad", "0ad-data", "0ad-data-common"],
    ["libssl3", "libssl-dev", "libssl-doc", "openssl"],
    ["curl", "libcurl4", "libcurl4-openssl-dev"],
    ["libghc-lens-dev", "libghc-lens-doc", "libghc-lens-prof"],
    ["python3-requests", "python-requests-doc"],
])
def test_related_packages_land_together(records, family):
    groups = {r["group"] for r in records if r["package"] in family}
    assert len(groups) == 1 and len({r["package"] for r in records if r["package"] in family}) == len(family)


def test_committed_file_is_sorted_and_processing_is_idempotent(records):
    keys = [(r["group"], r["package"], r["summary"], r["document"]) for r in records]
    assert keys == sorted(keys)
    stripped = [{k: r[k] for k in ("package", "summary", "document")} for r in records]
    # compare content, not gzip bytes: those also depend on the zlib build
    rebuilt = gzip.decompress(build.to_bytes(build.process(stripped)))
    assert rebuilt == gzip.decompress(data.DEFAULT_PATH.read_bytes())


@pytest.mark.parametrize("package, stem", [
    ("0ad-data-common", "0ad"), ("python3-requests", "requests"), ("python-requests-doc", "requests"),
    ("libssl3", "ssl"), ("libbinio1v5", "binio"), ("librust-getrandom+compiler-builtins-dev", "getrandom"),
    ("libghc-lens-prof", "lens"), ("r-cran-jsonlite", "jsonlite"), ("php8.2-mysql", "php"),
    ("libtest-simple-perl", "test-simple"), ("libfoo-perl", "foo"), ("lib32gcc-s1", "gcc"),
    ("g++-12", "g++"), ("389-ds-base", "389"), ("golang-github-spf13-cobra-dev", "spf"),
])
def test_name_stem(package, stem):
    assert build.name_stem(package) == stem


# --- the build script on synthetic input -----------------------------------------------------------

TRANSLATION = """Package: foo
Description-md5: 0123
Description-en: Frobnicate   widgets
 First  paragraph of foo,
 wrapped over two lines.
 .
 Second paragraph.

Package: foo-data
Description-md5: 4567
Description-en: Frobnicate widgets (data files)
 First  paragraph of foo,
 wrapped over two lines.
 .
 Second paragraph.

Package: bar
Description-md5: 89ab
Description-en: Transitional package

Package: baz
Description-md5: cdef
Description-en: Baz tool
 Baz does things.
   verbatim   line
 .
 .
 End.
"""


def test_parse_translation():
    assert build.parse_translation(TRANSLATION) == [
        {"package": "foo", "summary": "Frobnicate   widgets",
         "document": "First paragraph of foo, wrapped over two lines.\nSecond paragraph."},
        # foo-data: same body as foo (dropped by md5); bar: empty body (dropped)
        {"package": "baz", "summary": "Baz tool", "document": "Baz does things. verbatim line\nEnd."},
    ]


def test_source_md5_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="md5 is .*expected b01cbbed65b70071f7c1e417122f9669.*point release"):
        build._check_md5(TRANSLATION.encode())


def synthetic_records():
    other = "A completely different opening paragraph about something else entirely"
    return [
        {"package": "foo", "summary": " Foo  tool", "document": doc("foo alpha")},
        {"package": "foo-doc", "summary": "Foo docs", "document": doc("foo beta", other + " one")},
        {"package": "python3-foo", "summary": "Foo for Python", "document": doc("foo gamma", other + " two")},
        {"package": "qux-data", "summary": "Data for Qux", "document": doc("qux")},  # same 1st paragraph
        {"package": "libzap2", "summary": "Zap library", "document": doc("zap", other + " three")},
        {"package": "zap-utils", "summary": "Zap utilities", "document": doc("zap utils", other + " four")},
        {"package": "lone", "summary": "Lone", "document": doc("lone", other + " five")},
        {"package": "short", "summary": "Too short", "document": "only a few words"},
        {"package": "nosum", "summary": "  ", "document": doc("no summary", other + " six")},
    ]


def test_process_groups_filters_and_is_deterministic(tmp_path):
    recs = synthetic_records()
    out = build.process(recs)
    assert [r["package"] for r in out] == ["foo", "foo-doc", "python3-foo", "qux-data", "lone",
                                           "libzap2", "zap-utils"]
    groups = {r["package"]: r["group"] for r in out}
    assert groups["foo"] == groups["foo-doc"] == groups["python3-foo"] == groups["qux-data"] == "foo"
    assert groups["libzap2"] == groups["zap-utils"] == "zap" and groups["lone"] == "lone"
    assert all(list(r) == list(build.FIELDS) for r in out) and out[0]["summary"] == "Foo tool"
    assert build.to_bytes(out) == build.to_bytes(build.process(list(reversed(recs))))

    src = tmp_path / "in.jsonl.gz"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in recs)
    outs = [tmp_path / "a" / "d.jsonl.gz", tmp_path / "b" / "d.jsonl.gz"]
    for out_path in outs:
        assert build.main(["--from-jsonl", str(src), "--out", str(out_path)]) == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    digest = hashlib.sha256(outs[0].read_bytes()).hexdigest()
    assert (outs[0].parent / "SHA256SUMS").read_text() == f"{digest}  d.jsonl.gz\n"
    frame = pd.concat([data.load_debian(s, path=outs[0], verify=digest)
                       for s in data.SPLITS if s in {r["split"] for r in out}])
    assert sorted(frame["package"]) == sorted(groups)


def test_empty_split_and_empty_input_raise(tmp_path):
    path = tmp_path / "d.jsonl.gz"
    path.write_bytes(build.to_bytes([{"package": "a", "summary": "s", "document": "d", "group": "a",
                                      "split": "sft"}]))
    assert len(data.load_debian("sft", path=path, verify=False)) == 1
    with pytest.raises(ValueError, match="split 'test' is empty"):
        data.load_debian("test", path=path, verify=False)
    with pytest.raises(ValueError, match="no record passes the filters"):
        build.process(synthetic_records()[-2:])


# --- API helpers -----------------------------------------------------------------------------------


def test_unknown_split():
    expected = r"unknown split 'train'; expected one of \('sft', 'online', 'test'\)"
    with pytest.raises(ValueError, match=expected):
        data.load_debian("train")


def test_sample_prompts():
    df = data.load_debian("online")
    a = data.sample_prompts(df, 256, np.random.default_rng(0))
    b = data.sample_prompts(df, 256, np.random.default_rng(0))
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 256 and a["package"].add(a["document"]).is_unique
    assert list(a.index) == list(range(256))
    small = df.head(5)
    assert len(data.sample_prompts(small, 5, np.random.default_rng(1))) == 5
    for n in (6, 0, -1, 2.0, True):
        with pytest.raises(ValueError, match=r"n must be an integer in \[1, 5\]"):
            data.sample_prompts(small, n, np.random.default_rng(1))
    with pytest.raises(TypeError, match="numpy.random.Generator"):
        data.sample_prompts(small, 2, np.random.RandomState(0))


def test_lead_baseline():
    assert data.lead_baseline("one two  three\nfour five six seven eight nine ten") == \
        "one two three four five six seven eight"
    assert data.lead_baseline("a b", n_words=8) == "a b"
    assert data.lead_baseline("a b c", n_words=2) == "a b"
    for bad in (0, -3, 1.5, True):
        with pytest.raises(ValueError, match="n_words must be a positive integer"):
            data.lead_baseline("a b c", n_words=bad)


def test_lead8_rouge_l_on_test_matches_feasibility_note():
    rouge_scorer = pytest.importorskip("rouge_score.rouge_scorer")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    df = data.load_debian("test")
    f1 = [scorer.score(ref, data.lead_baseline(d))["rougeL"].fmeasure
          for d, ref in zip(df.document, df.summary)]
    assert np.mean(f1) == pytest.approx(0.2716, abs=0.001)  # the note: 0.273 on 300 docs of another split


def test_to_hf_dataset():
    pytest.importorskip("datasets")
    ds = data.to_hf_dataset(data.load_debian("test").head(3))
    assert ds.column_names == ["package", "document", "summary", "group"] and len(ds) == 3


def test_the_reserve_is_whole_groups_apart_from_every_test_set_and_test_sets_are_nested():
    """No ``n_test`` reaches into the reserve (tuning and pilot prompts are never reported, whatever the
    evaluation's size); a larger test set only appends prompts; whole groups lie on one side."""
    test = data.load_debian("test")
    reserve, t200 = data.reserve_and_test(test, 200)
    assert len(reserve) >= min(data.RESERVED_PROMPTS, len(test) // 2) and len(t200) == 200
    for n in (1, 37, 800, len(test)):
        r, t = data.reserve_and_test(test, n)
        pd.testing.assert_frame_equal(r, reserve)  # the reserve does not depend on n_test
        k = min(len(t), 200)
        pd.testing.assert_frame_equal(t.iloc[:k], t200.iloc[:k])  # nested
        assert not set(t.group) & set(reserve.group) and not set(t.document) & set(reserve.document)
    everything = data.reserve_and_test(test, len(test))[1]
    assert len(everything) + len(reserve) == len(test)  # groups on one side: nothing lost but the reserve
    # in random order: the first 100 reserve prompts are a draw from many groups, not the split's first ones
    assert reserve.group.iloc[:100].nunique() > 60
    assert set(reserve.group.iloc[:100]) != set(test.group.iloc[:100])


def test_the_reserve_without_groups_splits_rows_and_keeps_documents_apart():
    rows = pd.DataFrame({"document": [f"d{i % 15}" for i in range(40)], "summary": ["s"] * 40})
    reserve, t = data.reserve_and_test(rows, 10, n_reserved=8)
    assert len(reserve) == 8 and len(t) == 10
    assert not set(t.document) & set(reserve.document)  # a duplicated document never straddles the cut
    assert len(data.reserve_and_test(rows, 1000, n_reserved=8)[1]) < 40 - 8 + 1
    assert len(data.reserve_and_test(rows, 5, n_reserved=1000)[0]) == 20  # at most half the split
    with pytest.raises(ValueError, match="positive integer"):
        data.reserve_and_test(rows, 0)
    with pytest.raises(ValueError, match="2 rows or more"):
        data.reserve_and_test(rows.iloc[:1], 1)
    with pytest.raises(ValueError, match="no test prompts remain"):
        data.reserve_and_test(rows.assign(group="one"), 5)  # one group: the reserve takes every row
