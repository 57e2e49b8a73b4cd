"""BERT / ALBERT / XLNet encoders: published variable names, forward pass against NumPy and transformers,
padding, dropout, precision, checkpoint loading.

Every numeric check runs the TF graph on random weights, then recomputes the same forward pass independently
(NumPy in float64 written from the published definitions, or transformers' PyTorch models fed the same values).
Checks that hold for every layout run over LAYOUTS (inputs padded on the layout's own side).
"""
import math

import numpy as np
import pytest

from tf_mrc.compat import IS_TF1, tf
from tf_mrc.modeling import build_encoder
from tf_mrc.modeling.checkpoint import CheckpointError, init_from_checkpoint
from tf_mrc.modeling.config import model_config
from tf_mrc.modeling.layouts import descriptor

V, H, A, I, E, P, L = 50, 32, 4, 64, 16, 16, 2
B, T = 2, 8
D = H // A   # XLNet's d_head
VARIANTS = ("bert", "google", "brightmart")   # the BERT family's weight layouts (NumPy reference)
LAYOUTS = ("bert", "xlnet")                   # one per encoder family


def make_config(variant, hidden_act="gelu", **overrides):
    fields = dict(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=A, intermediate_size=I,
                  max_position_embeddings=P, type_vocab_size=2, hidden_act=hidden_act)
    if variant == "xlnet":
        fields = dict(layout="xlnet", vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=A,
                      d_head=D, intermediate_size=I, hidden_act=hidden_act)
    elif variant != "bert":
        fields.update(layout="albert", embedding_size=E, albert_variant=variant)
    fields.update(overrides)
    return model_config(**fields)


def make_inputs(padding="right"):
    """Row 0 fills the window, row 1 has 5 real tokens and 3 of padding on ``padding``'s side."""
    rng = np.random.RandomState(0)
    input_ids = rng.randint(1, V, size=(B, T)).astype(np.int32)
    input_mask = np.array([[1] * T, [1] * 5 + [0] * (T - 5)], np.int32)
    segment_ids = np.array([[0] * 3 + [1] * (T - 3), [0] * 2 + [1] * 3 + [0] * (T - 5)], np.int32)
    input_ids[1, 5:] = 0
    if padding == "left":
        for array in (input_ids, input_mask, segment_ids):
            array[1] = np.roll(array[1], T - 5)
    return input_ids, input_mask, segment_ids


def random_values(variables, seed=1):
    """Weights large enough that attention is far from uniform and GELU far from linear; LN gamma around 1."""
    rng = np.random.RandomState(seed)
    values = {}
    for variable in variables:
        name = variable.name[:-2]
        value = rng.normal(0.0, 0.2, variable.shape.as_list())
        values[name] = (1.0 + value if name.endswith("gamma") else value).astype(np.float32)
    return values


def run_encoder(config, kernels="reference", compute_dtype="float32", is_training=False, values=None, runs=1,
                inputs=None):
    """Build the encoder in a fresh graph, load ``values`` (random by default), return (outputs, values)."""
    input_ids, input_mask, segment_ids = inputs or make_inputs(descriptor(config).padding)
    with tf.Graph().as_default():
        output = build_encoder(config, tf.constant(input_ids), tf.constant(input_mask), tf.constant(segment_ids),
                               is_training, kernels, compute_dtype)
        variables = tf.global_variables()
        with tf.Session() as sess:
            values = values or random_values(variables)
            for variable in variables:
                variable.load(values[variable.name[:-2]], sess)
            results = [sess.run(output) for _ in range(runs)]
    return (results if runs > 1 else results[0]), values


# ---------------------------------------------------------------------------------------------------------------
# Independent NumPy forward pass, written from google-research/bert, google-research/albert and brightmart/albert_zh.

BERT_NAMES = dict(query="attention/self/query", key="attention/self/key", value="attention/self/value",
                  attention_output="attention/output/dense", attention_norm="attention/output/LayerNorm",
                  intermediate="intermediate/dense", output="output/dense", output_norm="output/LayerNorm")
ALBERT_NAMES = dict(query="attention_1/self/query", key="attention_1/self/key", value="attention_1/self/value",
                    attention_output="attention_1/output/dense", attention_norm="LayerNorm",
                    intermediate="ffn_1/intermediate/dense", output="ffn_1/intermediate/output/dense",
                    output_norm="LayerNorm_1")


def np_layer_norm(x, w, scope):
    mean = x.mean(-1, keepdims=True)
    variance = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(variance + 1e-12) * w[scope + "/gamma"] + w[scope + "/beta"]


def np_dense(x, w, scope):
    return x @ w[scope + "/kernel"] + w[scope + "/bias"]


def np_gelu(x, form):
    if form == "tanh":
        return 0.5 * x * (1.0 + np.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x ** 3)))
    return 0.5 * x * (1.0 + np.vectorize(math.erf)(x / math.sqrt(2.0)))


def np_block(x, w, prefix, names, input_mask, gelu_form):
    def split_heads(t):
        return t.reshape(B, T, A, H // A).transpose(0, 2, 1, 3)

    q, k, v = (split_heads(np_dense(x, w, prefix + names[n])) for n in ("query", "key", "value"))
    scores = q @ k.transpose(0, 1, 3, 2) / math.sqrt(H // A) + (1.0 - input_mask[:, None, None, :]) * -10000.0
    probs = np.exp(scores - scores.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    context = (probs @ v).transpose(0, 2, 1, 3).reshape(B, T, H)
    attended = np_layer_norm(np_dense(context, w, prefix + names["attention_output"]) + x, w,
                             prefix + names["attention_norm"])
    inner = np_gelu(np_dense(attended, w, prefix + names["intermediate"]), gelu_form)
    return np_layer_norm(np_dense(inner, w, prefix + names["output"]) + attended, w, prefix + names["output_norm"])


def np_encoder(config, values, gelu_form):
    w = {name: value.astype(np.float64) for name, value in values.items()}
    input_ids, input_mask, segment_ids = make_inputs()
    variant = config.albert_variant if config.layout == "albert" else "bert"
    x = w["bert/embeddings/word_embeddings"][input_ids]
    if variant == "brightmart":
        x = x @ w["bert/embeddings/word_embeddings_2"]
    x = x + w["bert/embeddings/token_type_embeddings"][segment_ids] + w["bert/embeddings/position_embeddings"][:T]
    x = np_layer_norm(x, w, "bert/embeddings/LayerNorm")
    if variant == "google":
        x = np_dense(x, w, "bert/encoder/embedding_hidden_mapping_in")
    for layer in range(L):
        if variant == "bert":
            x = np_block(x, w, "bert/encoder/layer_%d/" % layer, BERT_NAMES, input_mask, gelu_form)
        elif variant == "brightmart":
            x = np_block(x, w, "bert/encoder/layer_shared/", BERT_NAMES, input_mask, gelu_form)
        else:
            group = layer * config.num_hidden_groups // L
            for inner in range(config.inner_group_num):
                prefix = "bert/encoder/transformer/group_%d/inner_group_%d/" % (group, inner)
                x = np_block(x, w, prefix, ALBERT_NAMES, input_mask, gelu_form)
    return x, np.tanh(np_dense(x[:, 0], w, "bert/pooler/dense"))


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("hidden_act,gelu_form", [("gelu", "tanh"), ("gelu_exact", "erf")])
def test_forward_matches_numpy(variant, hidden_act, gelu_form):
    config = make_config(variant, hidden_act)
    (sequence, pooled), values = run_encoder(config)
    assert sequence.dtype == np.float32 and sequence.shape == (B, T, H) and pooled.shape == (B, H)
    expected_sequence, expected_pooled = np_encoder(config, values, gelu_form)
    assert np.abs(sequence - expected_sequence).max() <= 1e-5
    assert np.abs(pooled - expected_pooled).max() <= 1e-5


def test_albert_groups_and_inner_groups_match_numpy():
    config = make_config("google", num_hidden_groups=2, inner_group_num=2)
    (sequence, pooled), values = run_encoder(config)
    expected_sequence, expected_pooled = np_encoder(config, values, "tanh")
    assert np.abs(sequence - expected_sequence).max() <= 1e-5
    assert np.abs(pooled - expected_pooled).max() <= 1e-5


@pytest.mark.parametrize("layout", LAYOUTS)
def test_padding_does_not_reach_real_tokens(layout):
    """Changing the ids and segment ids under input_mask == 0 leaves every real position's output and the pooled
    output (BERT: the first token, XLNet: <cls> last) unchanged; the padding positions themselves change."""
    config = make_config(layout)
    (sequence, pooled), values = run_encoder(config)
    input_ids, input_mask, segment_ids = make_inputs(descriptor(layout).padding)
    padding = input_mask[1] == 0
    input_ids[1, padding], segment_ids[1, padding] = 7, 1
    (changed, changed_pooled), _ = run_encoder(config, values=values, inputs=(input_ids, input_mask, segment_ids))
    assert np.abs(changed[1, ~padding] - sequence[1, ~padding]).max() <= 1e-5
    assert np.abs(changed_pooled - pooled).max() <= 1e-5
    assert np.abs(changed[1, padding] - sequence[1, padding]).max() > 1e-3


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dropout_only_when_training(layout):
    config = make_config(layout)
    outputs, _ = run_encoder(config, is_training=True, runs=2)
    assert np.abs(outputs[0].sequence_output - outputs[1].sequence_output).max() > 1e-3
    outputs, _ = run_encoder(config, is_training=False, runs=2)
    assert np.array_equal(outputs[0].sequence_output, outputs[1].sequence_output)


# ---------------------------------------------------------------------------------------------------------------
# Variable names and shapes, exactly as in the published checkpoints (written out for L = 2).

def bert_layer(prefix, names, hidden=H, inner=I):
    shapes = {}
    for part in ("query", "key", "value", "attention_output"):
        shapes[prefix + names[part] + "/kernel"] = (hidden, hidden)
        shapes[prefix + names[part] + "/bias"] = (hidden,)
    shapes[prefix + names["intermediate"] + "/kernel"] = (hidden, inner)
    shapes[prefix + names["intermediate"] + "/bias"] = (inner,)
    shapes[prefix + names["output"] + "/kernel"] = (inner, hidden)
    shapes[prefix + names["output"] + "/bias"] = (hidden,)
    for norm in ("attention_norm", "output_norm"):
        shapes[prefix + names[norm] + "/beta"] = (hidden,)
        shapes[prefix + names[norm] + "/gamma"] = (hidden,)
    return shapes


def published_variables(untie_r):
    """Names and shapes of a fine-tuned XLNet checkpoint's model (zihangdai/xlnet modeling.py + xlnet.py)."""
    bias = [L, A, D] if untie_r else [A, D]
    names = {
        "model/transformer/word_embedding/lookup_table": [V, H],
        "model/transformer/r_w_bias": bias,
        "model/transformer/r_r_bias": bias,
        "model/transformer/r_s_bias": bias,
        "model/transformer/seg_embed": [L, 2, A, D],
        "model/sequnece_summary/summary/kernel": [H, H],
        "model/sequnece_summary/summary/bias": [H],
    }
    for layer in range(L):
        prefix = "model/transformer/layer_%d/" % layer
        for head in "qkvor":
            names[prefix + "rel_attn/%s/kernel" % head] = [H, A, D]
        names[prefix + "ff/layer_1/kernel"] = [H, I]
        names[prefix + "ff/layer_1/bias"] = [I]
        names[prefix + "ff/layer_2/kernel"] = [I, H]
        names[prefix + "ff/layer_2/bias"] = [H]
        for norm in ("rel_attn/LayerNorm/", "ff/LayerNorm/"):
            names[prefix + norm + "beta"] = [H]
            names[prefix + norm + "gamma"] = [H]
    return {name: tuple(shape) for name, shape in names.items()}


PUBLISHED_NAMES = {
    "xlnet": published_variables(True),
    "xlnet_tied": published_variables(False),
    "bert": {
        "bert/embeddings/word_embeddings": (V, H),
        "bert/embeddings/token_type_embeddings": (2, H),
        "bert/embeddings/position_embeddings": (P, H),
        "bert/embeddings/LayerNorm/beta": (H,),
        "bert/embeddings/LayerNorm/gamma": (H,),
        **bert_layer("bert/encoder/layer_0/", BERT_NAMES),
        **bert_layer("bert/encoder/layer_1/", BERT_NAMES),
        "bert/pooler/dense/kernel": (H, H),
        "bert/pooler/dense/bias": (H,),
    },
    "google": {
        "bert/embeddings/word_embeddings": (V, E),
        "bert/embeddings/token_type_embeddings": (2, E),
        "bert/embeddings/position_embeddings": (P, E),
        "bert/embeddings/LayerNorm/beta": (E,),
        "bert/embeddings/LayerNorm/gamma": (E,),
        "bert/encoder/embedding_hidden_mapping_in/kernel": (E, H),
        "bert/encoder/embedding_hidden_mapping_in/bias": (H,),
        **bert_layer("bert/encoder/transformer/group_0/inner_group_0/", ALBERT_NAMES),
        "bert/pooler/dense/kernel": (H, H),
        "bert/pooler/dense/bias": (H,),
    },
    "brightmart": {
        "bert/embeddings/word_embeddings": (V, E),
        "bert/embeddings/word_embeddings_2": (E, H),
        "bert/embeddings/token_type_embeddings": (2, H),
        "bert/embeddings/position_embeddings": (P, H),
        "bert/embeddings/LayerNorm/beta": (H,),
        "bert/embeddings/LayerNorm/gamma": (H,),
        **bert_layer("bert/encoder/layer_shared/", BERT_NAMES),
        "bert/pooler/dense/kernel": (H, H),
        "bert/pooler/dense/bias": (H,),
    },
}


def graph_variables(config, is_training=True):
    input_ids, input_mask, segment_ids = make_inputs()
    with tf.Graph().as_default():
        build_encoder(config, tf.placeholder(tf.int32, [None, T]), tf.constant(input_mask),
                      tf.constant(segment_ids), is_training, "reference")
        assert {v.name for v in tf.trainable_variables()} == {v.name for v in tf.global_variables()}
        return {v.name[:-2]: tuple(v.shape.as_list()) for v in tf.global_variables()}


@pytest.mark.parametrize("variant", VARIANTS + ("xlnet", "xlnet_tied"))
def test_variables_are_the_published_ones(variant):
    config = make_config("xlnet", untie_r=False) if variant == "xlnet_tied" else make_config(variant)
    assert graph_variables(config) == PUBLISHED_NAMES[variant]


def test_albert_groups_variable_names():
    names = graph_variables(make_config("google", num_hidden_groups=2, inner_group_num=2))
    expected = {name: shape for name, shape in PUBLISHED_NAMES["google"].items() if "/transformer/" not in name}
    for group in range(2):
        for inner in range(2):
            expected.update(bert_layer("bert/encoder/transformer/group_%d/inner_group_%d/" % (group, inner),
                                       ALBERT_NAMES))
    assert names == expected


# ---------------------------------------------------------------------------------------------------------------
# Mixed precision and the kernel backends.

@pytest.mark.parametrize("variant", ("google", "xlnet"))
@pytest.mark.parametrize("compute_dtype,tolerance", [("float16", 2e-2), ("bfloat16", 8e-2)])
def test_reduced_precision_keeps_fp32_variables_and_outputs(variant, compute_dtype, tolerance):
    config = make_config(variant)
    if compute_dtype == "bfloat16" and IS_TF1:
        with pytest.raises(ValueError, match="bfloat16 needs TF 2"):
            run_encoder(config, compute_dtype=compute_dtype)
        return
    (sequence, pooled), values = run_encoder(config)
    (low_sequence, low_pooled), _ = run_encoder(config, compute_dtype=compute_dtype, values=values)
    assert low_sequence.dtype == np.float32 and low_pooled.dtype == np.float32
    assert np.abs(low_sequence - sequence).max() <= tolerance
    assert np.abs(low_pooled - pooled).max() <= tolerance

    input_ids, input_mask, segment_ids = make_inputs()
    with tf.Graph().as_default() as graph:
        build_encoder(config, tf.constant(input_ids), tf.constant(input_mask), tf.constant(segment_ids), False,
                      "reference", compute_dtype)
        assert {v.dtype.base_dtype for v in tf.global_variables()} == {tf.float32}
    matmuls = {op.get_attr("T") for op in graph.get_operations()
               if op.type in ("MatMul", "BatchMatMul", "BatchMatMulV2")}
    assert matmuls == {tf.as_dtype(compute_dtype)}
    softmax_and_moments = {op.get_attr("T") for op in graph.get_operations()
                           if op.type in ("Softmax", "SquaredDifference")}
    assert softmax_and_moments == {tf.float32}


def test_fused_kernels_match_reference_with_gradients():
    """The encoder must drive whichever backend --kernels picks identically, forward and backward."""
    config = make_config("bert", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    input_ids, input_mask, segment_ids = make_inputs()
    results = []
    for kernels in ("reference", "fused"):
        with tf.Graph().as_default():
            output = build_encoder(config, tf.constant(input_ids), tf.constant(input_mask),
                                   tf.constant(segment_ids), True, kernels)
            variables = tf.trainable_variables()
            loss = tf.reduce_sum(output.sequence_output * np.linspace(-1, 1, H)) + tf.reduce_sum(output.pooled_output)
            grads = [tf.convert_to_tensor(grad) for grad in tf.gradients(loss, variables)]  # embedding grads
            with tf.Session() as sess:
                values = random_values(variables)
                for variable in variables:
                    variable.load(values[variable.name[:-2]], sess)
                results.append(sess.run([output.sequence_output] + grads))
    for reference, fused in zip(*results):
        assert np.abs(reference - fused).max() <= 1e-4


@pytest.mark.parametrize("layout", LAYOUTS)
def test_bad_compute_dtype_is_a_one_line_error(layout):
    with tf.Graph().as_default():
        ids = tf.zeros([B, T], tf.int32)
        with pytest.raises(ValueError, match="compute_dtype"):
            build_encoder(make_config(layout), ids, ids, ids, False, "reference", "float64")


# ---------------------------------------------------------------------------------------------------------------
# Cross-check against transformers' PyTorch BertModel / AlbertModel on the same weights.

def torch_linear(state, prefix, values, scope):
    state[prefix + ".weight"] = values[scope + "/kernel"].T
    state[prefix + ".bias"] = values[scope + "/bias"]


def torch_layer_norm(state, prefix, values, scope):
    state[prefix + ".weight"] = values[scope + "/gamma"]
    state[prefix + ".bias"] = values[scope + "/beta"]


def torch_bert_layer(state, prefix, values, scope):
    for part in ("query", "key", "value"):
        torch_linear(state, prefix + ".attention.self." + part, values, scope + "attention/self/" + part)
    torch_linear(state, prefix + ".attention.output.dense", values, scope + "attention/output/dense")
    torch_layer_norm(state, prefix + ".attention.output.LayerNorm", values, scope + "attention/output/LayerNorm")
    torch_linear(state, prefix + ".intermediate.dense", values, scope + "intermediate/dense")
    torch_linear(state, prefix + ".output.dense", values, scope + "output/dense")
    torch_layer_norm(state, prefix + ".output.LayerNorm", values, scope + "output/LayerNorm")


def torch_model(variant, config, values, torch_act):
    """The transformers model holding ``values``: brightmart's ALBERT is BERT whose word table is
    word_embeddings @ word_embeddings_2 and whose layers are all the shared one."""
    import transformers

    common = dict(vocab_size=V, hidden_size=H, num_hidden_layers=L, num_attention_heads=A, intermediate_size=I,
                  max_position_embeddings=P, type_vocab_size=2, hidden_act=torch_act, layer_norm_eps=1e-12,
                  hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    state = {}
    if variant == "google":
        model = transformers.AlbertModel(transformers.AlbertConfig(
            embedding_size=E, num_hidden_groups=config.num_hidden_groups, inner_group_num=config.inner_group_num,
            **common))
        torch_linear(state, "encoder.embedding_hidden_mapping_in", values, "bert/encoder/embedding_hidden_mapping_in")
        for group in range(config.num_hidden_groups):
            for inner in range(config.inner_group_num):
                prefix = "encoder.albert_layer_groups.%d.albert_layers.%d" % (group, inner)
                scope = "bert/encoder/transformer/group_%d/inner_group_%d/" % (group, inner)
                for part in ("query", "key", "value"):
                    torch_linear(state, prefix + ".attention." + part, values, scope + "attention_1/self/" + part)
                torch_linear(state, prefix + ".attention.dense", values, scope + "attention_1/output/dense")
                torch_layer_norm(state, prefix + ".attention.LayerNorm", values, scope + "LayerNorm")
                torch_linear(state, prefix + ".ffn", values, scope + "ffn_1/intermediate/dense")
                torch_linear(state, prefix + ".ffn_output", values, scope + "ffn_1/intermediate/output/dense")
                torch_layer_norm(state, prefix + ".full_layer_layer_norm", values, scope + "LayerNorm_1")
        torch_linear(state, "pooler", values, "bert/pooler/dense")
    else:
        model = transformers.BertModel(transformers.BertConfig(**common))
        for layer in range(L):
            scope = "bert/encoder/layer_%d/" % layer if variant == "bert" else "bert/encoder/layer_shared/"
            torch_bert_layer(state, "encoder.layer.%d" % layer, values, scope)
        torch_linear(state, "pooler.dense", values, "bert/pooler/dense")
    words = values["bert/embeddings/word_embeddings"]
    if variant == "brightmart":
        words = words @ values["bert/embeddings/word_embeddings_2"]
    state["embeddings.word_embeddings.weight"] = words
    state["embeddings.token_type_embeddings.weight"] = values["bert/embeddings/token_type_embeddings"]
    state["embeddings.position_embeddings.weight"] = values["bert/embeddings/position_embeddings"]
    torch_layer_norm(state, "embeddings.LayerNorm", values, "bert/embeddings/LayerNorm")
    return model, state


@pytest.mark.parametrize("variant,hidden_act,torch_act,groups", [
    ("bert", "gelu", "gelu_new", 1), ("bert", "gelu_exact", "gelu", 1), ("google", "gelu", "gelu_new", 1),
    ("google", "gelu", "gelu_new", 2), ("brightmart", "gelu", "gelu_new", 1)])
def test_matches_transformers(variant, hidden_act, torch_act, groups):
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    overrides = dict(num_hidden_groups=groups, inner_group_num=groups) if variant == "google" else {}
    config = make_config(variant, hidden_act, **overrides)
    (sequence, pooled), values = run_encoder(config)
    model, state = torch_model(variant, config, values, torch_act)
    missing, unexpected = model.load_state_dict({k: torch.tensor(v) for k, v in state.items()}, strict=False)
    assert not unexpected and all("position_ids" in name or "token_type_ids" in name for name in missing)
    model.eval()
    input_ids, input_mask, segment_ids = (torch.tensor(a, dtype=torch.long) for a in make_inputs())
    with torch.no_grad():
        out = model(input_ids=input_ids, attention_mask=input_mask, token_type_ids=segment_ids)
    assert np.abs(out.last_hidden_state.numpy() - sequence).max() <= 1e-4
    assert np.abs(out.pooler_output.numpy() - pooled).max() <= 1e-4


def transformers_outputs(values, untie_r, activation, clamp_len):
    """transformers' XLNetModel + XLNetSequenceSummary on our TF variable values (PyTorch, independent code)."""
    torch = pytest.importorskip("torch")
    from transformers import XLNetConfig, XLNetModel
    from transformers.models.xlnet.modeling_xlnet import XLNetSequenceSummary

    config = XLNetConfig(vocab_size=V, d_model=H, n_layer=L, n_head=A, d_inner=I,
                         ff_activation=activation, attn_type="bi", bi_data=False, clamp_len=clamp_len, dropout=0.0,
                         layer_norm_eps=1e-12, summary_type="last", summary_use_proj=True,
                         summary_activation="tanh", summary_last_dropout=0.0)
    model = XLNetModel(config).eval()
    root = "model/transformer/"
    state = {"word_embedding.weight": values[root + "word_embedding/lookup_table"],
             "mask_emb": np.zeros([1, 1, H], np.float32)}
    for layer in range(L):
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
    ids, mask, segments = make_inputs("left")
    with torch.no_grad():
        hidden = model(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask).float(),
                       token_type_ids=torch.tensor(segments, dtype=torch.long)).last_hidden_state
        pooled = summary(hidden)
    return hidden.numpy(), pooled.numpy()


@pytest.mark.parametrize("untie_r,activation,clamp_len", [
    (True, "gelu", -1),   # Chinese XLNet-mid's settings
    (False, "relu", -1),  # tied biases, XLNet's other activation
    (True, "gelu", 3),    # distances beyond 3 clamped
])
def test_xlnet_matches_transformers(untie_r, activation, clamp_len):
    config = make_config("xlnet", activation, untie_r=untie_r, clamp_len=clamp_len)
    (sequence, pooled), values = run_encoder(config)
    # XLNet's TF 'gelu' is the tanh form: transformers calls that 'gelu_new'.
    expected_sequence, expected_pooled = transformers_outputs(
        values, untie_r, "gelu_new" if activation == "gelu" else activation, clamp_len)
    assert sequence.shape == (B, T, H) and pooled.shape == (B, H)
    assert sequence.dtype == np.float32 and pooled.dtype == np.float32
    assert np.abs(sequence - expected_sequence).max() <= 1e-4  # padding rows included
    assert np.abs(pooled - expected_pooled).max() <= 1e-4
    assert np.abs(sequence).mean() > 0.1  # the comparison is not between two near-zero tensors


# ---------------------------------------------------------------------------------------------------------------
# init_from_checkpoint

def save_checkpoint(path, config, extra=None):
    """Write a checkpoint the way the publishers did: a tf.train.Saver over the model (plus ``extra`` tensors)."""
    input_ids, input_mask, segment_ids = make_inputs(descriptor(config).padding)
    with tf.Graph().as_default():
        build_encoder(config, tf.constant(input_ids), tf.constant(input_mask), tf.constant(segment_ids), True,
                      "reference")
        for name, value in (extra or {}).items():
            tf.get_variable(name, initializer=np.asarray(value), trainable=False)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = {v.name[:-2]: value for v, value in zip(tf.global_variables(),
                                                              sess.run(tf.global_variables()))}
            tf.train.Saver().save(sess, str(path))
    return values


def load_into_fresh_graph(path, config, head=False):
    input_ids, input_mask, segment_ids = make_inputs(descriptor(config).padding)
    logged = []
    with tf.Graph().as_default():
        build_encoder(config, tf.constant(input_ids), tf.constant(input_mask), tf.constant(segment_ids), True,
                      "reference")
        if head:
            tf.get_variable("cls/squad/output_weights", [2, H])
        report = init_from_checkpoint(str(path), log=logged.append)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            values = {v.name[:-2]: value for v, value in zip(tf.global_variables(),
                                                              sess.run(tf.global_variables()))}
    return report, values, logged


# What published pre-trained checkpoints hold beside the model: XLNet's pre-training objects.
PRETRAINING_EXTRAS = {"xlnet": {"model/transformer/mask_emb/mask_emb": np.ones([1, 1, H], np.float32),
                                "model/lm_loss/bias": np.ones([V], np.float32)}}


@pytest.mark.parametrize("variant", VARIANTS + ("xlnet",))
def test_published_checkpoint_loads_completely(tmp_path, variant):
    config = make_config(variant)
    extra = PRETRAINING_EXTRAS.get(variant, {})
    saved = save_checkpoint(tmp_path / "model.ckpt", config, extra)
    report, loaded, logged = load_into_fresh_graph(tmp_path / "model.ckpt", config)
    assert sorted(report.loaded) == sorted(PUBLISHED_NAMES[variant])
    assert report.missing == [] and report.unused == [] and report.pretraining_heads == sorted(extra)
    for name in PUBLISHED_NAMES[variant]:
        np.testing.assert_array_equal(loaded[name], saved[name])
    count = len(saved) - len(extra)
    assert logged[0].endswith("loaded %d of %d model variables" % (count, count))


def test_report_lists_missing_unused_and_pretraining_heads(tmp_path):
    config = make_config("bert")
    extra = {"cls/predictions/output_bias": np.zeros(V, np.float32),
             "cls/predictions/transform/dense/kernel": np.zeros((H, H), np.float32),
             "cls/seq_relationship/output_weights": np.zeros((2, H), np.float32),
             "global_step": np.int64(7),
             "bert/pooler/dense/kernel/adam_m": np.zeros((H, H), np.float32),
             "bert/encoder/unknown_extra": np.zeros(3, np.float32)}
    saved = save_checkpoint(tmp_path / "model.ckpt", config, extra)
    report, loaded, logged = load_into_fresh_graph(tmp_path / "model.ckpt", config, head=True)
    assert report.missing == ["cls/squad/output_weights"]
    assert report.unused == ["bert/encoder/unknown_extra"]
    assert sorted(report.pretraining_heads) == ["cls/predictions/output_bias", "cls/predictions/transform/dense/kernel",
                                                "cls/seq_relationship/output_weights"]
    np.testing.assert_array_equal(loaded["bert/embeddings/word_embeddings"], saved["bert/embeddings/word_embeddings"])
    text = "\n".join(logged)
    assert "NOT in checkpoint, left at initializer: cls/squad/output_weights" in text
    assert "unused checkpoint variable: bert/encoder/unknown_extra" in text
    assert "unused (pretraining heads): 3 variables under cls/predictions, cls/seq_relationship" in text
    assert "adam_m" not in text and "global_step" not in text


def test_shape_mismatch_is_a_one_line_error(tmp_path):
    save_checkpoint(tmp_path / "model.ckpt", make_config("bert", vocab_size=V + 10))
    with pytest.raises(CheckpointError) as err:
        load_into_fresh_graph(tmp_path / "model.ckpt", make_config("bert"))
    message = str(err.value)
    assert "\n" not in message
    assert "bert/embeddings/word_embeddings has shape [50, 32] in the model but [60, 32] in the checkpoint" in message


def test_unreadable_checkpoint_is_a_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="cannot be read") as err:
        load_into_fresh_graph(tmp_path / "nothing_here", make_config("bert"))
    assert "\n" not in str(err.value)


def test_checkpoint_without_the_encoder_is_an_error(tmp_path):
    """An --init_checkpoint that shares no (or only some) encoder variable names with the model would train from
    random weights: refused, naming what was expected."""
    with tf.Graph().as_default():
        tf.get_variable("other_model/dense/kernel", initializer=np.zeros((2, 2), np.float32))
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, str(tmp_path / "other.ckpt"))
    with pytest.raises(CheckpointError) as err:
        load_into_fresh_graph(tmp_path / "other.ckpt", make_config("bert"))
    assert "holds none of the model's 37 encoder variables: expected e.g. bert/embeddings/" in str(err.value)
    assert "it holds e.g. other_model/dense/kernel" in str(err.value)
    assert "\n" not in str(err.value)

    saved = save_checkpoint(tmp_path / "full.ckpt", make_config("bert"))
    partial = {name: value for name, value in saved.items() if "layer_1" not in name}
    with tf.Graph().as_default():
        for name, value in partial.items():
            tf.get_variable(name, initializer=value)
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            tf.train.Saver().save(sess, str(tmp_path / "partial.ckpt"))
    def encoder(names):   # the pooler may start fresh (weights converted from a model without one lack it)
        return [name for name in names if not name.startswith("bert/pooler/")]
    with pytest.raises(CheckpointError, match=r"holds only %d of the model's %d encoder variables: expected e\.g\. "
                       r"bert/encoder/layer_1/" % (len(encoder(partial)), len(encoder(saved)))):
        load_into_fresh_graph(tmp_path / "partial.ckpt", make_config("bert"))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_a_damaged_data_file_is_a_one_line_error(tmp_path, damage):
    from tf_mrc.modeling.checkpoint import verify_readable
    save_checkpoint(tmp_path / "model.ckpt", make_config("bert"))
    verify_readable(str(tmp_path / "model.ckpt"))
    data = tmp_path / "model.ckpt.data-00000-of-00001"
    content = bytearray(data.read_bytes())
    if damage == "truncate":
        content = content[:len(content) // 2]
    else:
        content[len(content) // 2] ^= 0x10
    data.write_bytes(bytes(content))
    with pytest.raises(CheckpointError, match="cannot be read") as err:
        verify_readable(str(tmp_path / "model.ckpt"))
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------------------------
# XLNet's span head (zihangdai/xlnet run_squad), training and inference paths, against NumPy on the same weights.
# (Its inference path is also compared with transformers' XLNetForQuestionAnswering in test_export.py.)

def np_log_softmax(x):
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def test_xlnet_span_head_matches_numpy():
    """Windows ``[pad] P P P <sep> Q Q <sep> <cls>``: answers may only start / end on P or <cls>. Training
    conditions the end on the gold start and adds half the answer class's sigmoid loss (label: the gold start is
    <cls>); inference keeps the 5 best starts and the 5 best ends of each (start-major)."""
    from tf_mrc.modeling import EncoderOutput
    from tf_mrc.modeling.heads import build_head
    rng = np.random.RandomState(4)
    length, width = 10, 16
    hidden = rng.normal(0, 1, (B, length, width)).astype(np.float32)
    segments = np.array([[3, 0, 0, 0, 0, 1, 1, 1, 1, 2]] * B, np.int32)  # [pad] P P P <sep> Q Q Q <sep> <cls>
    open_positions = np.zeros((B, length), np.float32)
    open_positions[:, 1:4] = open_positions[:, length - 1] = 1.0
    starts, ends = np.array([2, length - 1], np.int32), np.array([3, length - 1], np.int32)
    with tf.Graph().as_default():
        features = {"segment_ids": tf.constant(segments), "start_position": tf.constant(starts),
                    "end_position": tf.constant(ends)}
        output = EncoderOutput(tf.constant(hidden), tf.constant(hidden[:, -1]))
        with tf.variable_scope("", reuse=tf.AUTO_REUSE):
            trained, loss = build_head("span", output, features, None, 0.5, True, span_head="xlnet")
            predicted, _ = build_head("span", output, features, None, 0.5, False, span_head="xlnet")
        with tf.Session() as sess:
            sess.run(tf.global_variables_initializer())
            w = {v.op.name: value for v, value in zip(tf.global_variables(), sess.run(tf.global_variables()))}
            trained, loss, predicted = sess.run([trained, loss, predicted])

    def dense(x, scope, bias=True):
        return x @ w[scope + "/kernel"] + (w[scope + "/bias"] if bias else 0.0)

    def masked(logits, allowed):
        return logits * allowed - 1e30 * (1.0 - allowed)

    def end_log_probs(start_states):
        x = np.tanh(dense(np.concatenate([hidden, start_states], -1), "end_logits/dense_0"))
        mean, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
        x = (x - mean) / np.sqrt(var + 1e-12) * w["end_logits/LayerNorm/gamma"] + w["end_logits/LayerNorm/beta"]
        return np_log_softmax(masked(dense(x, "end_logits/dense_1")[..., 0], open_positions))

    start_logits = masked(dense(hidden, "start_logits/dense")[..., 0], open_positions)
    start_lp = np_log_softmax(start_logits)
    rows = np.arange(B)
    gold_states = np.repeat(hidden[rows, starts][:, None], length, 1)
    end_lp = end_log_probs(gold_states)
    assert np.abs(trained["start_log_probs"] - start_lp).max() <= 1e-4
    assert np.abs(trained["end_log_probs"] - end_lp).max() <= 1e-4
    probs = np.exp(start_lp)
    answer = np.tanh(dense(np.concatenate([(probs[:, :, None] * hidden).sum(1), hidden[:, -1]], -1),
                           "answer_class/dense_0"))
    cls_logits = dense(answer, "answer_class/dense_1", bias=False)[:, 0]
    assert np.abs(predicted["cls_logits"] - cls_logits).max() <= 1e-4
    no_answer = (starts == length - 1).astype(np.float64)
    sigmoid_loss = np.maximum(cls_logits, 0) - cls_logits * no_answer + np.log1p(np.exp(-np.abs(cls_logits)))
    expected_loss = -0.5 * (start_lp[rows, starts] + end_lp[rows, ends]).mean() + 0.5 * sigmoid_loss.mean()
    assert abs(loss - expected_loss) <= 1e-4
    top_starts = np.argsort(-start_lp, 1, kind="stable")[:, :5]
    assert np.array_equal(predicted["start_top_index"], top_starts)
    for row in range(B):
        for i, start in enumerate(top_starts[row]):
            lp = end_log_probs(np.repeat(hidden[:, start][:, None], length, 1))[row]
            top_ends = np.argsort(-lp, kind="stable")[:5]
            assert np.array_equal(predicted["end_top_index"][row, 5 * i:5 * i + 5], top_ends)
            assert np.abs(predicted["end_top_log_probs"][row, 5 * i:5 * i + 5] - lp[top_ends]).max() <= 1e-4
    # four open positions: they lead the beam, the fifth start is a closed one at a log-probability near -1e30
    assert all(set(row) == {1, 2, 3, length - 1} for row in predicted["start_top_index"][:, :4])
    assert (predicted["start_top_log_probs"][:, 4] < -1e29).all()
