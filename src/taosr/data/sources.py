"""Official dataset layouts: ESCI's two-parquet release and WANDS' three tab-separated files.

Both produce the same `LoadResult` as `taosr.data.loaders.load_records`, with every row either loaded,
rejected with a reason, or counted as skipped by a filter (`large_version`, split, locale).
"""

from __future__ import annotations

from pathlib import Path

from .readers import read_delimited, read_parquet
from .result import DataError, LoadResult
from .rows import LARGE_VERSION_REASON, RowReject, build_records, clean_text, esci_fields, id_str

WANDS_LABELS = {"exact": 4, "partial": 3, "irrelevant": 1}  # WANDS has nothing for level 2

EXAMPLE_COLUMNS = ("query", "query_id", "product_id", "product_locale", "esci_label", "large_version")
PRODUCT_COLUMNS = ("product_id", "product_locale", "product_title", "product_description",
                   "product_bullet_point", "product_brand", "product_color")


def load_esci_official(examples_parquet: str | Path, products_parquet: str | Path, split: str | None = None,
                       locale: str | None = None, sources_csv: str | Path | None = None, *,
                       rejects_path: Path | None = None) -> LoadResult:
    """The Shopping Queries Dataset as published: examples joined with products.

    Joins on (product_locale, product_id) and keeps ``large_version == 1`` (the 4-class task),
    then the optional ``split`` ("train"/"test") and ``locale`` ("us"/"es"/"jp"). Rows left out
    are counted in ``skipped`` by reason (not listed: there can be millions). An example without
    a product row is a reject. ``sources_csv`` (query_id, source) sets ``query_type``.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    ex, pr = read_parquet(Path(examples_parquet)), read_parquet(Path(products_parquet))
    for table, need, name in ((ex, EXAMPLE_COLUMNS + ("split",) * bool(split), examples_parquet),
                              (pr, PRODUCT_COLUMNS, products_parquet)):
        if missing := [c for c in need if c not in table.column_names]:
            raise DataError(f"{name}: missing ESCI column(s) {', '.join(missing)}")
    sources: dict[str, str] = {}
    if sources_csv is not None:
        header, rows = read_delimited(Path(sources_csv))
        if not {"query_id", "source"} <= set(header):
            raise DataError(f"{sources_csv}: expected columns query_id, source (got {', '.join(header)})")
        sources = {r["query_id"].strip(): r["source"] for _, r, error in rows if not error}

    file, res = str(examples_parquet), LoadResult()
    ex = ex.append_column("_row", pa.array(range(1, ex.num_rows + 1), pa.int64()))
    filters = [(LARGE_VERSION_REASON, lambda t: pc.equal(pc.cast(t["large_version"], pa.int64()), 1))]
    filters += [(f"split != {split}", lambda t: pc.equal(t["split"], split))] * bool(split)
    filters += [(f"product_locale != {locale}", lambda t: pc.equal(t["product_locale"], locale))] * bool(locale)
    for reason, keep in filters:
        try:
            kept = ex.filter(keep(ex))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise DataError(f"{examples_parquet}: unexpected column types ({e})") from None
        if n := ex.num_rows - kept.num_rows:
            res.skipped[reason] = n
        ex = kept

    index: dict[tuple, int] = {}
    for i, key in enumerate(zip(pr["product_locale"].to_pylist(), pr["product_id"].to_pylist())):
        index.setdefault(key, i)  # a duplicated product row: the first one wins

    def joined(raw: dict, default_id: str) -> dict:
        if "product_title" not in raw:
            raise RowReject("product_id", "no product row for (product_locale, product_id) in the products file")
        return esci_fields(raw, default_id)

    pr = pr.select(list(PRODUCT_COLUMNS))
    for batch in ex.to_batches(max_chunksize=50_000):
        examples = batch.to_pylist()
        where = [index.get((e["product_locale"], e["product_id"])) for e in examples]
        products = iter(pr.take([i for i in where if i is not None]).to_pylist())
        rows = [(e.pop("_row"), e if i is None else e | next(products)
                 | {"query_source": sources.get(id_str(e["query_id"]) or "")}, None) for e, i in zip(examples, where)]
        build_records(res, file, rows, joined, require_label=False)
    stats = res.stats_of(file)
    stats["skipped"] = sum(res.skipped.values())
    stats["rows"] += stats["skipped"]
    if rejects_path is not None:
        res.write_rejects(rejects_path)
    return res


def load_wands(folder: str | Path, *, rejects_path: Path | None = None) -> LoadResult:
    """Wayfair WANDS: tab-separated ``query.csv``, ``product.csv`` and ``label.csv`` in one folder.

    One record per label.csv row. Labels: Exact -> 4 (Excellent), Partial -> 3 (Related),
    Irrelevant -> 1 (WANDS has nothing for 2). ``category`` is the leaf of ``category hierarchy``
    (else ``product_class``), ``attributes`` come from ``product_features`` ("name:value|...").
    ``query_class`` is a product class, not a query type, so it is not used.
    """
    folder, tables = Path(folder), {}
    need = {"query": ("query_id", "query"), "product": ("product_id", "product_name"),
            "label": ("query_id", "product_id", "label")}
    for name, cols in need.items():
        if not (folder / f"{name}.csv").is_file():
            raise DataError(f"{folder}: not a WANDS folder (no {name}.csv)")
        header, tables[name] = read_delimited(folder / f"{name}.csv", "\t")
        if missing := [c for c in cols if c not in header]:
            raise DataError(f"{folder / f'{name}.csv'}: missing WANDS column(s) {', '.join(missing)}")
    queries = {r["query_id"].strip(): (r, error) for _, r, error in tables["query"]}
    products = {r["product_id"].strip(): (r, error) for _, r, error in tables["product"]}

    def fields(raw: dict, default_id: str) -> dict:
        qid, pid, label = raw["query_id"].strip(), raw["product_id"].strip(), raw["label"].strip()
        for fld, key, found, name in (("query", f"query_id {qid}", queries.get(qid), "query.csv"),
                                      ("title", f"product_id {pid}", products.get(pid), "product.csv")):
            if found is None or found[1]:
                raise RowReject(fld, f"{key} has a bad row in {name}: {found[1]}" if found else f"{key} not in {name}")
        if label.lower() not in WANDS_LABELS:
            raise RowReject("label", f"not a WANDS label: {label!r} (expected Exact, Partial or Irrelevant)")
        q, p = queries[qid][0], products[pid][0]
        features = (part.split(":", 1) for part in (p.get("product_features") or "").split("|") if ":" in part)
        return {
            "id": id_str(raw.get("id")) or f"{qid}:{pid}",
            "query": clean_text(q["query"]),
            "title": clean_text(p["product_name"]),
            "category": clean_text((p.get("category hierarchy") or "").split("/")[-1] or p.get("product_class")),
            "attributes": {k.strip(): v.strip() for k, v in features if k.strip() and v.strip()},
            "description": clean_text(p.get("product_description"), multiline=True),
            "label": WANDS_LABELS[label.lower()],
        }

    res = LoadResult()
    build_records(res, str(folder / "label.csv"), tables["label"], fields, require_label=False)
    if rejects_path is not None:
        res.write_rejects(rejects_path)
    return res

