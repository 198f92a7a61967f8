"""Topics on real rows: known categories kept, the rest clustered and labelled in English and Chinese."""

import re

import numpy as np
import pytest

from sft_assets.core.embed import embed_texts, load_sentence_model
from sft_assets.core.records import embedding_texts
from sft_assets.core.topics import MAX_TOPICS, centroids_of, default_topic_count, terms, topic_clusters

CJK = re.compile(r"[\u4e00-\u9fff]")


@pytest.fixture(scope="module")
def rows(read_corpus):
    """English rows without a category, then Chinese rows whose file names their category."""
    en = read_corpus("alpaca_en/alpaca_data-6382-9407.json").records.head(120)
    zh = [read_corpus(f"zh_categories/{name}").records.head(40) for name in ("学术问题.json", "名词解释类问题.json")]
    texts = embedding_texts(en) + [t for frame in zh for t in embedding_texts(frame)]
    known = en["category"].to_list() + [c for frame in zh for c in frame["category"].to_list()]
    emb = embed_texts(load_sentence_model("default", device="cpu"), texts)
    return emb, known, texts


def test_known_categories_kept_and_the_rest_clustered(rows):
    emb, known, texts = rows
    category, cluster_id, label = topic_clusters(emb, known, texts, seed=0)
    unknown = np.array([c is None for c in known])
    assert unknown.sum() == 120
    assert [c for c, u in zip(category, unknown) if not u] == [c for c in known if c is not None]
    assert (cluster_id[~unknown] == -1).all() and all(lab is None for lab, u in zip(label, unknown) if not u)
    k = default_topic_count(120)
    assert sorted(set(cluster_id[unknown].tolist())) == list(range(k))
    for i in np.flatnonzero(unknown):
        assert label[i] and category[i] == f"topic {cluster_id[i]}: {label[i]}"
    # rows of one cluster share a label; different clusters are told apart
    assert len({label[i] for i in np.flatnonzero(unknown)}) == k


def test_deterministic_for_a_seed(rows):
    emb, known, texts = rows
    first = topic_clusters(emb, known, texts, k=6, seed=3)
    second = topic_clusters(emb, known, texts, k=6, seed=3)
    assert first[0] == second[0] and np.array_equal(first[1], second[1]) and first[2] == second[2]


def test_chinese_rows_get_chinese_labels(rows):
    emb, known, texts = rows
    zh = slice(120, len(texts))
    _, cluster_id, label = topic_clusters(emb[zh], [None] * len(texts[zh]), texts[zh], k=2, seed=0)
    assert set(cluster_id.tolist()) == {0, 1}
    assert all(CJK.search(lab) for lab in label)


def test_rows_without_terms_get_a_numbered_topic(read_corpus):
    texts = embedding_texts(read_corpus("zh_categories/整数加减法.json").records.head(20))  # "91-33=" ...
    emb = np.eye(20, 8, dtype=np.float32)
    category, _, label = topic_clusters(emb, [None] * 20, texts, k=1)
    assert label == [""] * 20 and category == ["topic 0"] * 20


def test_k_rule_and_clamps(rows):
    emb, known, texts = rows
    assert default_topic_count(1) == 1 and default_topic_count(200) == 10
    assert default_topic_count(10**7) == MAX_TOPICS
    _, cluster_id, _ = topic_clusters(emb[:3], [None] * 3, texts[:3], k=50)
    assert sorted(cluster_id.tolist()) == [0, 1, 2]
    category, cluster_id, label = topic_clusters(emb[120:], known[120:], texts[120:])
    assert category == known[120:] and (cluster_id == -1).all()


def test_terms_cover_english_and_chinese():
    assert terms("Write a Python function to sort the list") == ["write", "python", "function", "sort", "list"]
    assert terms("请写一个函数") == ["请写", "写一", "一个", "个函", "函数"]
    assert terms("12 + 7 = ?") == []


def test_new_rows_join_the_previous_topics_and_old_rows_stay(rows, read_corpus):
    """One more file in the pool: old rows keep their topic, new ones join the nearest, no refit."""
    emb, _, texts = rows
    en_emb, en_texts = emb[:120], texts[:120]
    _, before, before_label = topic_clusters(en_emb, [None] * 120, en_texts, k=6, seed=0)
    centroids = centroids_of(en_emb, before)
    assert centroids.shape == (6, emb.shape[1])
    new_texts = embedding_texts(read_corpus("alpaca_en/alpaca_data-0-3252.json").records.head(12))
    grown_emb = np.vstack([en_emb, embed_texts(load_sentence_model("default", device="cpu"), new_texts)])
    grown = [None] * grown_emb.shape[0]
    _, kept, _ = topic_clusters(grown_emb, grown, en_texts + new_texts, k=6, seed=0, centroids=centroids)
    assert (kept[:120] == before).mean() >= 0.95
    assert set(kept[120:].tolist()) <= set(range(6))
    # centroids for another k are not used
    _, other_k, _ = topic_clusters(grown_emb, grown, en_texts + new_texts, k=5, seed=0, centroids=centroids)
    assert sorted(set(other_k.tolist())) == list(range(5))
    assert centroids_of(en_emb[:3], np.array([0, 2, 2])) is None
