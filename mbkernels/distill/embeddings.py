"""The student's embeddings from a Hugging Face teacher's, through a projection.

Google initialises the student's embeddings by copying the IB-BERT teacher's, which works because
both share the 512-d inter-block width and the 128-d embedding. A BERT-family teacher (e.g. MiniLM:
384-d word, position and type embeddings) shares neither, so `project_embeddings` maps them instead:

- word embeddings: the teacher's `[V, Ht]` matrix, centred, onto its top `E` principal directions
  `P` (`[Ht, E]`): student word = (word_t − mean) P, the best rank-E approximation in the least
  squares sense;
- `embedding_transformation`: the current-token slot of the trigram maps back through `Pᵀ` and the
  bias adds the mean, so the student's first `Ht` channels start as the teacher's word vector
  (the previous/next-token slots start at zero: the teacher has no trigram);
- position and token-type embeddings: copied into the first `Ht` of the student's `Hs ≥ Ht` channels.

The embedding sum then equals the teacher's (before its LayerNorm) up to the PCA truncation, zero
padded to the student's width; NoNorm starts as the identity. Unlike copied parameters these are a
starting point, not the teacher's own: the trainer trains them with the embeddings group.
"""

from __future__ import annotations

import torch

from mbkernels.heads import MobileBertForPreTraining


def project_embeddings(student: MobileBertForPreTraining, teacher: torch.nn.Module) -> list[str]:
    """Initialise `student`'s embeddings from the HF `teacher`'s (see the module doc); returns the
    names of the parameters it set."""
    sc = student.config
    t_emb = getattr(getattr(teacher, "base_model", teacher), "embeddings", None)
    if t_emb is None or not all(hasattr(t_emb, n) for n in ("word_embeddings", "position_embeddings",
                                                            "token_type_embeddings")):
        raise ValueError(f"teacher: expected a BERT-family model with word, position and token-type embeddings, "
                         f"got {type(teacher).__name__}")
    word = t_emb.word_embeddings.weight.detach().double()
    vocab, width = word.shape
    if vocab != sc.vocab_size:
        raise ValueError(f"teacher: its vocabulary has {vocab} tokens, the student's {sc.vocab_size}")
    if sc.hidden_size < width or sc.embedding_size > width:
        raise ValueError(f"student: projecting a {width}-d teacher's embeddings needs hidden_size >= {width} and "
                         f"embedding_size <= {width}, got hidden_size={sc.hidden_size}, "
                         f"embedding_size={sc.embedding_size}")
    pos, types = t_emb.position_embeddings.weight.detach(), t_emb.token_type_embeddings.weight.detach()
    if pos.shape[0] < sc.max_position_embeddings or types.shape[0] < sc.type_vocab_size:
        raise ValueError(f"teacher: it has {pos.shape[0]} positions and {types.shape[0]} token types, the student "
                         f"{sc.max_position_embeddings} and {sc.type_vocab_size}")
    mean = word.mean(0)
    _, _, vh = torch.linalg.svd(word - mean, full_matrices=False)
    p = vh[: sc.embedding_size].T                                   # [Ht, E], orthonormal columns
    if not (sc.trigram_input or sc.embedding_size != sc.hidden_size):
        raise ValueError("student: projecting a teacher's embeddings needs trigram_input or embedding_size != "
                         "hidden_size (an embedding_transformation that maps them back), got neither")
    s = student.mobilebert.embeddings
    cur = slice(sc.embedding_size, 2 * sc.embedding_size) if sc.trigram_input else slice(0, sc.embedding_size)
    names = ["word_embeddings.weight", "position_embeddings.weight", "token_type_embeddings.weight",
             "embedding_transformation.weight", "embedding_transformation.bias"]
    with torch.no_grad():
        s.word_embeddings.weight.copy_((word - mean) @ p)
        s.position_embeddings.weight.zero_()[:, :width] = pos[: sc.max_position_embeddings]
        s.token_type_embeddings.weight.zero_()[:, :width] = types[: sc.type_vocab_size]
        s.embedding_transformation.weight.zero_()[:width, cur] = p
        s.embedding_transformation.bias.zero_()[:width] = mean
        s.LayerNorm.weight.fill_(1.0)
        s.LayerNorm.bias.zero_()
    return [f"mobilebert.embeddings.{n}" for n in names]
