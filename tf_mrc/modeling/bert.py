"""BERT layout (google-research/bert): google BERT, BERT-wwm-ext, RoBERTa-wwm-ext, brightmart RoBERTa, ERNIE 1.0
converted, MacBERT. Variables under ``bert/`` exactly as in those checkpoints."""
from tf_mrc.compat import tf
from tf_mrc.modeling import layers


def encode(config, input_ids, input_mask, segment_ids, is_training, kernels="fused", compute_dtype="float32",
           attention_dropout_placement="probs", recompute=False):
    return layers.bert_scope_encode(config, input_ids, input_mask, segment_ids, is_training, kernels, compute_dtype,
                                    attention_dropout_placement, recompute, config.hidden_size, _numbered_layers)


def _numbered_layers(hidden, block, config, settings):
    """One block per layer, each with its own variables under ``layer_<i>``."""
    for index in range(config.num_hidden_layers):
        with tf.variable_scope("layer_%d" % index):
            hidden = block(hidden)
    return hidden
