"""BERT layout (google-research/bert): google BERT, BERT-wwm-ext, RoBERTa-wwm-ext, brightmart RoBERTa, ERNIE 1.0
converted, MacBERT. Variables under ``bert/`` exactly as in those checkpoints."""
from tf_mrc.compat import tf
from tf_mrc.modeling import layers


def encode(config, input_ids, input_mask, segment_ids, is_training, kernels="fused", compute_dtype="float32",
           attention_dropout_placement="probs", recompute=False):
    settings = layers.make_settings(config, is_training, kernels, compute_dtype,
                                    attention_dropout_placement=attention_dropout_placement,
                                    recompute=recompute)
    batch_size, seq_length = layers.shape_list(input_ids)
    with tf.variable_scope("bert"):
        hidden = layers.embeddings(input_ids, segment_ids, config, settings, config.hidden_size)
        mask = layers.attention_mask(input_mask)
        with tf.variable_scope("encoder"):
            for index in range(config.num_hidden_layers):
                with tf.variable_scope("layer_%d" % index):
                    hidden = layers.transformer_block(hidden, mask, batch_size, seq_length, config, settings,
                                                      layers.BERT_BLOCK)
        return layers.encoder_output(hidden, batch_size, seq_length, config, settings)
