"""ALBERT layout, in the two published variable layouts chosen by ``config.albert_variant``.

google (google-research/albert; google albert_xxlarge, and what transformers' AlbertModel mirrors):
    embeddings at E, ``bert/encoder/embedding_hidden_mapping_in`` E->H (only when E != H), then layers shared per
    group under ``bert/encoder/transformer/group_G/inner_group_I/`` with ALBERT's own sub-scope names.
brightmart (brightmart/albert_zh; albert_large/xlarge zh):
    ``word_embeddings`` [V, E] times ``word_embeddings_2`` [E, H], token-type/position embeddings at H, then one
    BERT-named block under ``bert/encoder/layer_shared/`` applied num_hidden_layers times.
"""
from tf_mrc.compat import tf
from tf_mrc.modeling import layers

GOOGLE_BLOCK = layers.BlockNames(attention="attention_1/self", attention_output="attention_1/output/dense",
                                 attention_norm="LayerNorm", intermediate="ffn_1/intermediate/dense",
                                 output="ffn_1/intermediate/output/dense", output_norm="LayerNorm_1")


def encode(config, input_ids, input_mask, segment_ids, is_training, kernels="fused", compute_dtype="float32",
           attention_dropout_placement="probs", recompute=False):
    if config.albert_variant == "google":
        run_blocks, block_names, projection_size = _google_layers, GOOGLE_BLOCK, None
    else:
        run_blocks, block_names, projection_size = _brightmart_layers, layers.BERT_BLOCK, config.hidden_size
    return layers.bert_scope_encode(config, input_ids, input_mask, segment_ids, is_training, kernels, compute_dtype,
                                    attention_dropout_placement, recompute, config.embedding_size, run_blocks,
                                    block_names, projection_size)


def _brightmart_layers(hidden, block, config, settings):
    """brightmart albert_zh: the one block under ``layer_shared`` applied num_hidden_layers times."""
    for _ in range(config.num_hidden_layers):
        with tf.variable_scope("layer_shared", reuse=tf.AUTO_REUSE):
            hidden = block(hidden)
    return hidden


def _google_layers(hidden, block, config, settings):
    """google-research/albert's transformer_model: layer i uses group int(i / L * G), each group runs its
    inner_group_num blocks in turn."""
    if config.embedding_size != config.hidden_size:
        with tf.variable_scope("embedding_hidden_mapping_in"):
            hidden = layers.dense(hidden, config.hidden_size, settings)
    with tf.variable_scope("transformer", reuse=tf.AUTO_REUSE):
        for index in range(config.num_hidden_layers):
            group = int(index / config.num_hidden_layers * config.num_hidden_groups)
            for inner in range(config.inner_group_num):
                with tf.variable_scope("group_%d/inner_group_%d" % (group, inner)):
                    hidden = block(hidden)
    return hidden
