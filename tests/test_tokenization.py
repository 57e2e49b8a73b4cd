"""XLNet's SentencePiece tokenizer (tf_mrc.tokenization.sentencepiece) against XLNet's prepro_utils
preprocess_text + encode_ids definition, its character offsets, and its input layout rebuilt by hand. The
SentencePiece model is trained inside the test with XLNet's special symbols (never committed)."""
import unicodedata

import pytest
from conftest import train_xlnet_spm

from tf_mrc.tokenization import SentencePieceTokenizer, TokenizerError, load_tokenizer, preprocess_text

UNDERLINE = u"\u2581"


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
