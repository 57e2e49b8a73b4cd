"""Encoders. Every encoder takes the same inputs and returns the same outputs, so task heads never ask which.

    build_encoder(config, input_ids, input_mask, segment_ids, is_training, kernels, compute_dtype)
        input_ids, segment_ids: int32 [B, T]; input_mask: int32 [B, T], 1 = real token, 0 = padding
        (XLNet converts to its own convention inside).
        Returns EncoderOutput(sequence_output [B, T, H] float32, pooled_output [B, H] float32):
        pooled_output is the encoder's own summary of its CLS position (BERT/ALBERT: bert/pooler/dense over
        the first token; XLNet: its sequence summary over the last token).
        attention_dropout_placement: 'probs' (BERT's) or 'context' (see tf_mrc.ops.attention_dropout).
        recompute: gradient checkpointing per transformer block when training (BERT and ALBERT layouts).

Variable scopes are those of the published TF checkpoints, so ``--init_checkpoint`` loads with no mapping.
"""
import collections

EncoderOutput = collections.namedtuple("EncoderOutput", ["sequence_output", "pooled_output"])


def build_encoder(config, input_ids, input_mask, segment_ids, is_training, kernels="fused", compute_dtype="float32",
                  attention_dropout_placement="probs", recompute=False):
    from tf_mrc.modeling.layouts import encoder_module
    return encoder_module(config).encode(config, input_ids, input_mask, segment_ids, is_training, kernels,
                                         compute_dtype, attention_dropout_placement, recompute)
