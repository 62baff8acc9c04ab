"""Term-count matrices over one vocabulary, BM25 fields and TF-IDF rows (scipy sparse).

The ranking index scores a query against several fields of every card (name, tags, trigger
words, prompt evidence, the whole card, the whole model) with the same terms as the lexical
channel (words plus adjacent-word bigrams).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from diffagent.index.search.lexical import terms

K1 = 1.2
B = 0.75


class Vocabulary:
    """Term -> column, grown while documents are counted, then fixed for queries."""

    def __init__(self, columns: dict[str, int] | None = None) -> None:
        self.columns: dict[str, int] = columns or {}

    def __len__(self) -> int:
        return len(self.columns)

    def count_rows(self, documents: Sequence[str], *, grow: bool = True) -> sp.csr_matrix:
        """Term counts of each document (rows); new terms get columns when `grow`."""
        indptr: list[int] = [0]
        indices: list[int] = []
        data: list[int] = []
        for document in documents:
            counts: dict[int, int] = {}
            for term in terms(document):
                column = self.columns.get(term)
                if column is None:
                    if not grow:
                        continue
                    column = self.columns[term] = len(self.columns)
                counts[column] = counts.get(column, 0) + 1
            indices.extend(counts)
            data.extend(counts.values())
            indptr.append(len(indices))
        return sp.csr_matrix(
            (np.asarray(data, np.float32), np.asarray(indices, np.int64), np.asarray(indptr)),
            shape=(len(documents), 0),
        )

    def query(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """The known columns of a query's terms and their counts."""
        counts: dict[int, int] = {}
        for term in terms(text):
            column = self.columns.get(term)
            if column is not None:
                counts[column] = counts.get(column, 0) + 1
        columns = np.fromiter(counts.keys(), np.int64, len(counts))
        return columns, np.fromiter(counts.values(), np.float32, len(counts))


def with_width(matrix: sp.csr_matrix, width: int) -> sp.csr_matrix:
    """The same rows with `width` columns (counts made before the vocabulary stopped growing)."""
    return sp.csr_matrix(
        (matrix.data, matrix.indices, matrix.indptr), shape=(matrix.shape[0], width)
    )


@dataclass
class BM25Field:
    """One BM25 field: counts (rows = documents), lengths, idf, and term weights by column."""

    counts: sp.csr_matrix
    lengths: np.ndarray
    mean_length: float
    idf: np.ndarray
    weights: sp.csc_matrix

    @classmethod
    def build(cls, counts: sp.csr_matrix) -> BM25Field:
        """BM25 (k1 1.2, b 0.75) weights of every (document, term) count."""
        counts = counts.tocsr()
        n = counts.shape[0]
        lengths = np.asarray(counts.sum(1)).ravel().astype(np.float32)
        mean_length = float(lengths.mean()) if n else 1.0
        mean_length = mean_length or 1.0
        df = np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float32)
        idf = np.log1p((n - df + 0.5) / (df + 0.5)).astype(np.float32)
        weights = counts.copy()
        rows = np.repeat(np.arange(n), np.diff(weights.indptr))
        tf = weights.data
        norm = K1 * (1 - B + B * lengths[rows] / mean_length)
        weights.data = idf[weights.indices] * tf * (K1 + 1) / (tf + norm)
        return cls(counts, lengths, mean_length, idf, weights.tocsc())

    def scores(self, columns: np.ndarray) -> np.ndarray:
        """BM25 of every document for a query's columns."""
        return np.asarray(self.weights[:, columns].sum(1)).ravel()

    def candidate_weights(self, rows: np.ndarray, columns: np.ndarray) -> np.ndarray:
        """(len(rows), len(columns)) BM25 weights of the query terms in some documents."""
        return self.weights[:, columns].tocsr()[rows].toarray()

    def replacement_weights(self, counts: sp.csr_matrix, columns: np.ndarray) -> np.ndarray:
        """BM25 weights of the query terms in a replacement document (1 x V counts)."""
        length = float(counts.sum())
        tf = np.asarray(counts[:, columns].todense()).ravel()
        norm = K1 * (1 - B + B * length / self.mean_length)
        return self.idf[columns] * tf * (K1 + 1) / (tf + norm + 1e-9)


def smooth_idf(counts: sp.csr_matrix) -> np.ndarray:
    """scikit-learn's smoothed idf of every column: ln((1 + n) / (1 + df)) + 1."""
    n = counts.shape[0]
    df = np.bincount(counts.indices, minlength=counts.shape[1]).astype(np.float32)
    return (np.log((1 + n) / (1 + df)) + 1).astype(np.float32)


def tfidf_rows(counts: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    """L2-normalised sublinear TF-IDF rows (scikit-learn's `sublinear_tf=True`)."""
    matrix = counts.tocsr().astype(np.float32)
    matrix.data = (1 + np.log(matrix.data)) * idf[matrix.indices]
    norms = np.sqrt(np.asarray(matrix.multiply(matrix).sum(1)).ravel())
    return (sp.diags(1 / np.maximum(norms, 1e-9)) @ matrix).tocsr()


def tfidf_query(columns: np.ndarray, counts: np.ndarray, idf: np.ndarray) -> np.ndarray:
    """The unit TF-IDF weights of a query on its columns."""
    if not len(columns):
        return np.zeros(0, np.float32)
    weights = (1 + np.log(counts)) * idf[columns]
    return weights / max(float(np.linalg.norm(weights)), 1e-9)
