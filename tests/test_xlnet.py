"""XLNet layout: encoder against transformers' XLNetModel on the same weights, published variable names,
checkpoint loading, and the SentencePiece tokenizer against XLNet's preprocessing + encode_ids definition."""
import unicodedata

import numpy as np
import pytest
from conftest import train_xlnet_spm

from tf_mrc.compat import tf
from tf_mrc.modeling import build_encoder
from tf_mrc.modeling import xlnet
from tf_mrc.modeling.config import ModelConfig
from tf_mrc.tokenization import SentencePieceTokenizer, TokenizerError, load_tokenizer, preprocess_text

N_LAYER, D_MODEL, N_HEAD, D_HEAD, D_INNER, N_TOKEN = 2, 32, 4, 8, 64, 100
BATCH, LENGTH = 2, 10
UNDERLINE = u"\u2581"


def tiny_config(**overrides):
    values = dict(layout="xlnet", vocab_size=N_TOKEN, hidden_size=D_MODEL, num_hidden_layers=N_LAYER,
                  num_attention_heads=N_HEAD, d_head=D_HEAD, intermediate_size=D_INNER, hidden_act="gelu")
    values.update(overrides)
    return ModelConfig(**values)


def tiny_inputs():
    """Row 0 fills the window; row 1 is left-padded by 3, as SentencePieceTokenizer.pack lays it out."""
    rng = np.random.RandomState(7)
    ids = rng.randint(9, N_TOKEN, size=(BATCH, LENGTH)).astype(np.int32)
    mask = np.ones((BATCH, LENGTH), np.int32)
    mask[1, :3] = 0
    ids[1, :3] = 5
    segments = np.array([[0, 0, 0, 0, 1, 1, 1, 1, 1, 2],
                         [3, 3, 3, 0, 0, 0, 1, 1, 1, 2]], np.int32)
    return ids, mask, segments


def published_variables(untie_r):
    """Names and shapes of a fine-tuned XLNet checkpoint's model (zihangdai/xlnet modeling.py + xlnet.py)."""
    bias = [N_LAYER, N_HEAD, D_HEAD] if untie_r else [N_HEAD, D_HEAD]
    names = {
        "model/transformer/word_embedding/lookup_table": [N_TOKEN, D_MODEL],
        "model/transformer/r_w_bias": bias,
        "model/transformer/r_r_bias": bias,
        "model/transformer/r_s_bias": bias,
        "model/transformer/seg_embed": [N_LAYER, 2, N_HEAD, D_HEAD],
        "model/sequnece_summary/summary/kernel": [D_MODEL, D_MODEL],
        "model/sequnece_summary/summary/bias": [D_MODEL],
    }
    for layer in range(N_LAYER):
        prefix = "model/transformer/layer_%d/" % layer
        for head in "qkvor":
            names[prefix + "rel_attn/%s/kernel" % head] = [D_MODEL, N_HEAD, D_HEAD]
        names[prefix + "ff/layer_1/kernel"] = [D_MODEL, D_INNER]
        names[prefix + "ff/layer_1/bias"] = [D_INNER]
        names[prefix + "ff/layer_2/kernel"] = [D_INNER, D_MODEL]
        names[prefix + "ff/layer_2/bias"] = [D_MODEL]
        for norm in ("rel_attn/LayerNorm/", "ff/LayerNorm/"):
            names[prefix + norm + "beta"] = [D_MODEL]
            names[prefix + norm + "gamma"] = [D_MODEL]
    return names


def run_encoder(config, weights=None, compute_dtype="float32", is_training=False, seed=0):
    """Build the encoder, set every variable (random N(0, 0.3) unless given) and run it on tiny_inputs."""
    ids, mask, segments = tiny_inputs()
    graph = tf.Graph()
    with graph.as_default():
        tf.set_random_seed(seed)
        placeholders = [tf.placeholder(tf.int32, [None, None]) for _ in range(3)]
        output = build_encoder(config, *placeholders, is_training=is_training, kernels="reference",
                               compute_dtype=compute_dtype)
        rng = np.random.RandomState(1)
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            values = {}
            for variable in tf.global_variables():
                name = variable.op.name
                value = weights[name] if weights else rng.normal(0.0, 0.3, variable.shape.as_list())
                variable.load(value.astype(np.float32), session)
                values[name] = value.astype(np.float32)
            feed = dict(zip(placeholders, (ids, mask, segments)))
            sequence, pooled = session.run(output, feed)
            second = session.run(output.sequence_output, feed)
    return sequence, pooled, second, values


def transformers_outputs(values, untie_r, activation, clamp_len):
    """transformers' XLNetModel + XLNetSequenceSummary on our TF variable values (PyTorch, independent code)."""
    torch = pytest.importorskip("torch")
    from transformers import XLNetConfig, XLNetModel
    from transformers.models.xlnet.modeling_xlnet import XLNetSequenceSummary

    config = XLNetConfig(vocab_size=N_TOKEN, d_model=D_MODEL, n_layer=N_LAYER, n_head=N_HEAD, d_inner=D_INNER,
                         ff_activation=activation, attn_type="bi", bi_data=False, clamp_len=clamp_len, dropout=0.0,
                         layer_norm_eps=1e-12, summary_type="last", summary_use_proj=True,
                         summary_activation="tanh", summary_last_dropout=0.0)
    model = XLNetModel(config).eval()
    root = "model/transformer/"
    state = {"word_embedding.weight": values[root + "word_embedding/lookup_table"],
             "mask_emb": np.zeros([1, 1, D_MODEL], np.float32)}
    for layer in range(N_LAYER):
        tf_layer, pt_layer = root + "layer_%d/" % layer, "layer.%d." % layer
        for head in "qkvor":
            state[pt_layer + "rel_attn." + head] = values[tf_layer + "rel_attn/%s/kernel" % head]
        for bias in ("r_w_bias", "r_r_bias", "r_s_bias"):
            state[pt_layer + "rel_attn." + bias] = values[root + bias][layer] if untie_r else values[root + bias]
        state[pt_layer + "rel_attn.seg_embed"] = values[root + "seg_embed"][layer]
        for tf_norm, pt_norm in (("rel_attn/LayerNorm/", "rel_attn.layer_norm."),
                                 ("ff/LayerNorm/", "ff.layer_norm.")):
            state[pt_layer + pt_norm + "weight"] = values[tf_layer + tf_norm + "gamma"]
            state[pt_layer + pt_norm + "bias"] = values[tf_layer + tf_norm + "beta"]
        for dense in ("layer_1", "layer_2"):
            state[pt_layer + "ff.%s.weight" % dense] = values[tf_layer + "ff/%s/kernel" % dense].T
            state[pt_layer + "ff.%s.bias" % dense] = values[tf_layer + "ff/%s/bias" % dense]
    model.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=True)
    summary = XLNetSequenceSummary(config).eval()
    summary.load_state_dict({"summary.weight": torch.tensor(values["model/sequnece_summary/summary/kernel"].T),
                             "summary.bias": torch.tensor(values["model/sequnece_summary/summary/bias"])})
    ids, mask, segments = tiny_inputs()
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask).float(),
                       token_type_ids=torch.tensor(segments, dtype=torch.long)).last_hidden_state
        pooled = summary(hidden)
    return hidden.numpy(), pooled.numpy()


# ----------------------------------------------------------------------------------------------------------
# Encoder
# ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("untie_r,activation,clamp_len", [
    (True, "gelu", -1),   # Chinese XLNet-mid's settings
    (False, "relu", -1),  # tied biases, XLNet's other activation
    (True, "gelu", 3),    # distances beyond 3 clamped
])
def test_matches_transformers_xlnet(untie_r, activation, clamp_len):
    config = tiny_config(untie_r=untie_r, hidden_act=activation, clamp_len=clamp_len)
    sequence, pooled, _, values = run_encoder(config)
    # XLNet's TF 'gelu' is the tanh form: transformers calls that 'gelu_new'.
    expected_sequence, expected_pooled = transformers_outputs(
        values, untie_r, "gelu_new" if activation == "gelu" else activation, clamp_len)
    assert sequence.shape == (BATCH, LENGTH, D_MODEL) and pooled.shape == (BATCH, D_MODEL)
    assert sequence.dtype == np.float32 and pooled.dtype == np.float32
    assert np.abs(sequence - expected_sequence).max() <= 1e-4  # padding rows included
    assert np.abs(pooled - expected_pooled).max() <= 1e-4
    assert np.abs(sequence).mean() > 0.1  # the comparison is not between two near-zero tensors


def test_real_tokens_ignore_padding_content():
    """What padding holds (ids, segment) never reaches real positions; pooled_output reads position T - 1."""
    config = tiny_config()
    sequence, pooled, _, values = run_encoder(config)
    ids, mask, segments = tiny_inputs()
    graph = tf.Graph()
    with graph.as_default():
        placeholders = [tf.placeholder(tf.int32, [None, None]) for _ in range(3)]
        output = xlnet.encode(config, *placeholders, is_training=False, kernels="reference")
        with tf.Session() as session:
            for variable in tf.global_variables():
                variable.load(values[variable.op.name], session)
            ids[1, :3], segments[1, :3] = 42, 0
            changed, changed_pooled = session.run(output, dict(zip(placeholders, (ids, mask, segments))))
    np.testing.assert_allclose(changed[1, 3:], sequence[1, 3:], atol=1e-5)
    np.testing.assert_allclose(changed_pooled, pooled, atol=1e-5)
    assert np.abs(changed[1, :3] - sequence[1, :3]).max() > 1e-3  # the padding rows themselves did change


def test_float16_compute_close_to_float32():
    config = tiny_config()
    sequence, pooled, _, values = run_encoder(config)
    half_sequence, half_pooled, _, _ = run_encoder(config, weights=values, compute_dtype="float16")
    assert half_sequence.dtype == np.float32
    assert np.abs(half_sequence - sequence).max() < 0.01
    assert np.abs(half_pooled - pooled).max() < 0.01


def test_dropout_only_when_training():
    config = tiny_config()
    _, _, _, values = run_encoder(config)
    first, _, second, _ = run_encoder(config, weights=values, is_training=True)
    assert np.abs(first - second).max() > 1e-3
    first, _, second, _ = run_encoder(config, weights=values, is_training=False)
    np.testing.assert_array_equal(first, second)


@pytest.mark.parametrize("untie_r", [True, False])
def test_variables_are_the_published_ones(untie_r):
    graph = tf.Graph()
    with graph.as_default():
        placeholders = [tf.placeholder(tf.int32, [None, None]) for _ in range(3)]
        xlnet.encode(tiny_config(untie_r=untie_r), *placeholders, is_training=True)
        created = {v.op.name: v.shape.as_list() for v in tf.global_variables()}
        assert all(v.dtype.base_dtype == tf.float32 for v in tf.global_variables())
    assert created == published_variables(untie_r)


def test_published_checkpoint_loads_with_nothing_missing(tmp_path):
    """A checkpoint under the published names (plus pre-training's mask_emb, lm_loss and global_step) loads."""
    rng = np.random.RandomState(3)
    saved = {name: rng.normal(size=shape).astype(np.float32) for name, shape in published_variables(True).items()}
    saved["model/transformer/mask_emb/mask_emb"] = rng.normal(size=[1, 1, D_MODEL]).astype(np.float32)
    saved["model/lm_loss/bias"] = rng.normal(size=[N_TOKEN]).astype(np.float32)
    path = str(tmp_path / "xlnet_model.ckpt")
    with tf.Graph().as_default():
        for name, value in saved.items():
            tf.get_variable(name, initializer=value)
        tf.train.get_or_create_global_step()
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            tf.train.Saver().save(session, path)

    with tf.Graph().as_default():
        placeholders = [tf.placeholder(tf.int32, [None, None]) for _ in range(3)]
        xlnet.encode(tiny_config(), *placeholders, is_training=True)
        ours = {v.op.name: v for v in tf.global_variables()}
        in_checkpoint = dict(tf.train.list_variables(path))
        assert {name: in_checkpoint.get(name) for name in ours} == {n: v.shape.as_list() for n, v in ours.items()}
        tf.train.init_from_checkpoint(path, {name: name for name in ours})
        with tf.Session() as session:
            session.run(tf.global_variables_initializer())
            loaded = session.run(ours)
    for name, value in loaded.items():
        np.testing.assert_array_equal(value, saved[name], err_msg=name)


def test_bad_compute_dtype_is_one_line_error():
    with tf.Graph().as_default():
        placeholders = [tf.placeholder(tf.int32, [None, None]) for _ in range(3)]
        with pytest.raises(ValueError, match="compute_dtype"):
            xlnet.encode(tiny_config(), *placeholders, is_training=False, compute_dtype="int8")


# ----------------------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------------------

CHINESE = [
    "今天北京的天气很好，我们去公园散步。", "他在图书馆里读了一本关于历史的书。", "这家餐厅的饺子非常好吃。",
    "春天来了，花园里的花都开了。", "我的朋友明天要坐火车去上海。", "老师说考试的时间改到了下午三点。",
    "长江是中国最长的河流。", "孩子们在操场上踢足球。", "妈妈做的红烧肉是全家人的最爱。",
    "这座城市有很多古老的建筑。", "请问去火车站怎么走？", "他每天早上六点起床跑步。",
    "博物馆里展出了许多珍贵的文物。", "我们应该保护环境，节约用水。", "这本小说讲述了一个感人的故事。",
    "冬天的哈尔滨非常寒冷。", "科学家发现了一种新的植物。", "会议将在星期五上午举行。",
    "她用电脑写了一篇很长的报告。", "小明的数学成绩提高了很多。", "黄河流经九个省区。",
    "机器阅读理解是自然语言处理的重要任务。", "模型需要从文章中找出问题的答案。", "法院审理了这起合同纠纷案件。",
]
ENGLISH = [
    "The weather in Beijing is very nice today.", "She reads a book about history in the library.",
    "Machine reading comprehension is an important task.", "The model must find the answer in the passage.",
    "Spring has come and the flowers are blooming.", "My friend will take the train to Shanghai tomorrow.",
    "The museum shows many precious cultural relics.", "He gets up at six every morning to run.",
    "The court heard a contract dispute case.", "Children are playing football on the playground.",
    "The Yellow River flows through nine provinces.", "Scientists discovered a new kind of plant.",
]
YEARS = ["1949", "1978", "1999", "2008", "2019", "2020", "365", "12"]


def training_sentences():
    """A few hundred sentences written for this test: Chinese, English, mixed, numbers followed by commas."""
    sentences = list(CHINESE) + list(ENGLISH)
    for index, year in enumerate(YEARS):
        for chinese, english in zip(CHINESE[index::4], ENGLISH[index::2]):
            sentences.append("在%s年，%s" % (year, chinese))
            sentences.append("In %s, %s" % (year, english.lower()))
            sentences.append("%s %s年 %s" % (english, year, chinese))
            sentences.append("Since %s, %s" % (year, english.upper()))
        for english in ENGLISH:
            sentences.append("In %s, %s" % (year, english.lower()))
            sentences.append("From %s, to %s, %s" % (year, year, english))
    return sentences


@pytest.fixture(scope="module")
def spm_model(tmp_path_factory):
    # BPE rather than XLNet's unigram: on a corpus this small only BPE learns pieces like '▁2020,' that XLNet's
    # 32k unigram vocabulary has and that its 'digits,' rule re-splits.
    return train_xlnet_spm(tmp_path_factory.mktemp("spm"), training_sentences(), 400, split_by_number=False)


def reference_preprocess(text, lower_case):
    """XLNet prepro_utils.preprocess_text (remove_space, keep_accents=False), on whole strings."""
    text = " ".join(text.strip().split()).replace("``", '"').replace("''", '"')
    text = "".join(ch for ch in unicodedata.normalize("NFKD", text) if not unicodedata.combining(ch))
    return text.lower() if lower_case else text


def reference_pieces(processor, text):
    """XLNet prepro_utils.encode_pieces: SentencePiece pieces, with 'digits,' pieces split before the comma."""
    pieces = []
    for piece in processor.EncodeAsPieces(text):
        if len(piece) < 2 or piece[-1] != "," or not piece[-2].isdigit():
            pieces.append(piece)
            continue
        split = processor.EncodeAsPieces(piece[:-1].replace(UNDERLINE, ""))
        if not piece.startswith(UNDERLINE) and split[0].startswith(UNDERLINE):
            split = split[1:] if split[0] == UNDERLINE else [split[0][1:]] + split[1:]
        pieces.extend(split + [","])
    return pieces


TEXTS = [
    "今天北京的天气很好，我们去公园散步。",
    "  Machine   READING comprehension\tis an\u3000important task.  ",
    "ＡＢＣ公司在２０１９年，发布了新的Ｍｏｄｅｌ。",
    "In 1999, the café said ``hello'' to Zoë; 在2008年，他去了上海。",
    "黄河流经九个省区 and the Yellow River flows through 2020, 365, 12, provinces.",
    "第1999,2020，号文件",
]


@pytest.mark.parametrize("lower_case", [False, True])
def test_ids_follow_xlnet_preprocessing(spm_model, lower_case):
    import sentencepiece
    processor = sentencepiece.SentencePieceProcessor()
    processor.Load(spm_model)
    tokenizer = SentencePieceTokenizer(spm_model, lower_case=lower_case)
    split_seen = False
    for text in TEXTS:
        prepared = reference_preprocess(text, lower_case)
        assert preprocess_text(text, lower_case)[0] == prepared
        pieces = reference_pieces(processor, prepared)
        split_seen |= pieces != processor.EncodeAsPieces(prepared)
        ids, offsets = tokenizer.encode(text)
        assert ids == [processor.PieceToId(piece) for piece in pieces], text
        assert len(offsets) == len(ids)
    assert split_seen, "no 'digits,' piece was re-split: the corpus no longer exercises that rule"


@pytest.mark.parametrize("lower_case", [False, True])
def test_offsets_cover_the_original_characters(spm_model, lower_case):
    tokenizer = SentencePieceTokenizer(spm_model, lower_case=lower_case)
    for text in TEXTS:
        ids, offsets = tokenizer.encode(text)
        covered = set()
        previous_end = 0
        for token_id, (start, end) in zip(ids, offsets):
            assert previous_end <= start <= end <= len(text), (text, offsets)
            previous_end = end
            piece = tokenizer._sp.IdToPiece(token_id).replace(UNDERLINE, "")
            if start == end:
                assert piece == "", (text, token_id)  # only a bare '▁' covers nothing
                continue
            assert not text[start].isspace() and not text[end - 1].isspace()
            if token_id != tokenizer._sp.unk_id():
                assert reference_preprocess(text[start:end], lower_case) == piece, (text, text[start:end], piece)
            covered.update(range(start, end))
        assert covered == {i for i, ch in enumerate(text) if not ch.isspace()}, text


def test_offsets_by_hand(spm_model):
    """Full-width, upper-case, accents, doubled quotes and whitespace runs map back character by character."""
    prepared, spans = preprocess_text(u" Ａb\u3000\u3000``É'' 中\n", lower_case=True)
    assert prepared == u'ab "e" 中'
    assert spans == [(1, 2), (2, 3), (3, 5), (5, 7), (7, 8), (8, 10), (10, 11), (11, 12)]
    tokenizer = SentencePieceTokenizer(spm_model, lower_case=True)
    text = u"ＡＢＣ  Ｍｏｄｅｌ"
    ids, offsets = tokenizer.encode(text)
    pieces = [tokenizer._sp.IdToPiece(i) for i in ids]
    assert "".join(pieces).replace(UNDERLINE, " ").strip() == "abc model"
    covered = [text[start:end] for start, end in offsets]
    assert "".join(covered) == u"ＡＢＣＭｏｄｅｌ", list(zip(pieces, covered))
    assert offsets[0][0] == 0 and offsets[-1][1] == len(text)


def test_pack_layout_by_hand(spm_model):
    tokenizer = load_tokenizer("xlnet", spm_model=spm_model)
    assert isinstance(tokenizer, SentencePieceTokenizer)
    assert (tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id) == (3, 4, 5)  # XLNet's special_symbols
    packed = tokenizer.pack([[10, 11, 12], [20, 21]], [0, 1], 10)
    assert packed.input_ids == [5, 5, 10, 11, 12, 4, 20, 21, 4, 3]
    assert packed.input_mask == [0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
    assert packed.segment_ids == [3, 3, 0, 0, 0, 0, 1, 1, 1, 2]
    assert packed.part_starts == [2, 6]
    assert packed.cls_index == 9
    full = tokenizer.pack([[10, 11, 12], [20, 21]], [0, 1], 8)
    assert full.input_ids == [10, 11, 12, 4, 20, 21, 4, 3] and full.part_starts == [0, 4] and full.cls_index == 7
    assert tokenizer.num_special_tokens(2) == 3
    with pytest.raises(ValueError, match="exceeds max_length"):
        tokenizer.pack([[10, 11, 12], [20, 21]], [0, 1], 7)
    with pytest.raises(ValueError, match="segment ids"):
        tokenizer.pack([[10], [20]], [0, 2], 10)


def test_vocab_size_fingerprint_and_errors(spm_model, tmp_path):
    import sentencepiece
    processor = sentencepiece.SentencePieceProcessor()
    processor.Load(spm_model)
    cased = SentencePieceTokenizer(spm_model)
    assert cased.vocab_size == processor.GetPieceSize()
    assert cased.fingerprint == SentencePieceTokenizer(spm_model).fingerprint
    assert cased.fingerprint != SentencePieceTokenizer(spm_model, lower_case=True).fingerprint
    assert cased.encode("") == ([], []) and cased.encode(" \t ") == ([], [])
    with pytest.raises(TokenizerError, match="not found"):
        SentencePieceTokenizer(str(tmp_path / "missing.model"))
    junk = tmp_path / "junk.model"
    junk.write_bytes(b"not a sentencepiece model")
    with pytest.raises(TokenizerError, match="not a SentencePiece model"):
        SentencePieceTokenizer(str(junk))
