"""Inference latency of the exported frozen graph vs transformers' PyTorch model on the same weights.

    python bench/bench_inference.py [--seq 384 512] [--batch 1 8] [--reps 3] [--layers 12]

A BERT-base-shaped BertForQuestionAnswering (L=12, H=768, A=12, V=21128) with random weights is converted with
export.mapping, frozen with export.to_pb (one graph per sequence length: T is fixed in the graph) and timed next
to the PyTorch model in the same process, on the same inputs. Prints one row per (seq, batch): median latency
of each, their ratio, and the largest logit difference between the two (a parity check, not a speed figure).
Single figures swing between runs on a shared machine; compare the ratios of one run.
"""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def median_ms(run, reps):
    run()  # warm-up: first-call allocation and graph optimisation
    times = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        times.append(1e3 * (time.perf_counter() - started))
    return float(np.median(times))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seq", type=int, nargs="+", default=[384, 512])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()

    import tensorflow
    import torch
    import transformers
    from export import mapping, to_pb
    from export.from_pytorch import write_tf_checkpoint
    from tf_mrc.compat import tf
    from tf_mrc.modeling.config import ModelConfig

    torch.manual_seed(0)
    hf_config = transformers.BertConfig(vocab_size=21128, hidden_size=768, num_hidden_layers=args.layers,
                                        num_attention_heads=12, intermediate_size=3072, max_position_embeddings=512,
                                        hidden_act="gelu_new", hidden_dropout_prob=0.0,
                                        attention_probs_dropout_prob=0.0)
    model = transformers.BertForQuestionAnswering(hf_config).eval()
    state = {name: value.detach().numpy() for name, value in model.state_dict().items()}
    config = ModelConfig(vocab_size=21128, hidden_size=768, num_hidden_layers=args.layers, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=512, hidden_act="gelu_new")
    values, _ = mapping.torch_to_tf(state, config)
    workdir = tempfile.mkdtemp(prefix="bench_inference_")
    checkpoint = os.path.join(workdir, "model.ckpt")
    write_tf_checkpoint(values, checkpoint)

    print("tensorflow %s (oneDNN opts %s), torch %s (%d threads), %d CPU cores; BERT-base shape, %d layers, "
          "median of %d runs" % (tensorflow.__version__, os.environ.get("TF_ENABLE_ONEDNN_OPTS", "default"),
                                 torch.__version__, torch.get_num_threads(), os.cpu_count(), args.layers, args.reps))
    print("| seq | batch | frozen .pb ms | PyTorch ms | pb / PyTorch | max abs logit diff |")
    print("|---:|---:|---:|---:|---:|---:|")
    rng = np.random.RandomState(0)
    for seq in args.seq:
        spec = to_pb.ExportSpec(checkpoint=checkpoint, config=config, task="cmrc2018",
                                feature_settings={"max_seq_length": seq})
        graph_def, input_names, output_names = to_pb.freeze(spec, "span")
        graph = tf.Graph()
        with graph.as_default():
            tf.import_graph_def(graph_def, name="")
        session = tf.Session(graph=graph)
        fetches = [graph.get_tensor_by_name(name + ":0") for name in ("start_logits", "end_logits")]
        for batch in args.batch:
            ids = rng.randint(1, 21128, size=(batch, seq)).astype(np.int32)
            mask = np.ones((batch, seq), np.int32)
            segments = np.zeros((batch, seq), np.int32)
            segments[:, 64:] = 1
            feed = {graph.get_tensor_by_name(name + ":0"): value
                    for name, value in (("input_ids", ids), ("input_mask", mask), ("segment_ids", segments))}
            torch_inputs = {"input_ids": torch.tensor(ids, dtype=torch.long),
                            "attention_mask": torch.tensor(mask, dtype=torch.long),
                            "token_type_ids": torch.tensor(segments, dtype=torch.long)}

            def run_torch():
                with torch.no_grad():
                    return model(**torch_inputs)

            pb_ms = median_ms(lambda: session.run(fetches, feed), args.reps)
            torch_ms = median_ms(run_torch, args.reps)
            start, _ = session.run(fetches, feed)
            difference = np.abs(start - run_torch().start_logits.numpy()).max()
            print("| %d | %d | %.0f | %.0f | %.2f | %.1e |" % (seq, batch, pb_ms, torch_ms, pb_ms / torch_ms,
                                                               difference), flush=True)
        session.close()


if __name__ == "__main__":
    main()
