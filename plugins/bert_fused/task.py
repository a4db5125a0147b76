"""fairseq task ``translation_bert_fused``: translation whose batches also carry the BERT-side source."""

from dataclasses import dataclass, field

from fairseq import utils
from fairseq.data import data_utils
from fairseq.tasks import register_task
from fairseq.tasks.translation import TranslationConfig, TranslationTask

from plugins.bert_fused.bert_side import (
    BertSourceDataset,
    BertTokenizing,
    bert_max_length,
    load_bert_tokenizer,
    load_prepared,
    source_text,
)


@dataclass
class BertFusedTranslationConfig(TranslationConfig):
    bert_model: str = field(default="", metadata={
        "help": "local folder of the HF encoder used as BERT (model + tokenizer, saved with save_pretrained)"})
    bert_on_the_fly: bool = field(default=False, metadata={
        "help": "tokenize the BERT side at batch time from the binarized source instead of reading the files "
                "written by `graftkit bertnmt prepare`"})
    bert_remove_bpe: str = field(default="subword_nmt", metadata={
        "help": "BPE to undo before BERT's tokenizer (fairseq post-process names: subword_nmt, sentencepiece, "
                "none, ...)"})
    bert_max_length: int = field(default=0, metadata={
        "help": "truncate the BERT side to this many tokens (0 = BERT's own limit); truncations are counted "
                "and logged"})


@register_task("translation_bert_fused", dataclass=BertFusedTranslationConfig)
class BertFusedTranslationTask(TranslationTask):
    """TranslationTask plus the BERT-side source in ``net_input['bert_input']`` (for ``--arch bert_fused``)."""

    cfg: BertFusedTranslationConfig

    def __init__(self, cfg: BertFusedTranslationConfig, src_dict, tgt_dict) -> None:
        super().__init__(cfg, src_dict, tgt_dict)
        self.bert_tokenizer = load_bert_tokenizer(cfg.bert_model)
        self.bert_tokenizing = BertTokenizing(self.bert_tokenizer,
                                              bert_max_length(cfg.bert_model, self.bert_tokenizer,
                                                              cfg.bert_max_length))

    @property
    def remove_bpe(self) -> "str | None":
        return None if self.cfg.bert_remove_bpe in ("", "none") else self.cfg.bert_remove_bpe

    def load_dataset(self, split: str, epoch: int = 1, combine: bool = False, **kwargs) -> None:
        super().load_dataset(split, epoch=epoch, combine=combine, **kwargs)
        pairs = self.datasets[split]
        prepared = None
        if not self.cfg.bert_on_the_fly:
            paths = utils.split_paths(self.cfg.data)
            data_path = paths[(epoch - 1) % len(paths)] if split == self.cfg.train_subset else paths[0]
            prepared = load_prepared(data_path, split, self.cfg.source_lang, self.bert_tokenizer, len(pairs))
        self.datasets[split] = BertSourceDataset(pairs, self.bert_tokenizing, self.src_dict, prepared,
                                                 self.remove_bpe)

    def build_dataset_for_inference(self, src_tokens, src_lengths, constraints=None):
        pairs = super().build_dataset_for_inference(src_tokens, src_lengths, constraints=constraints)
        return BertSourceDataset(pairs, self.bert_tokenizing, self.src_dict, None, self.remove_bpe)

    def inference_step(self, generator, models, sample, prefix_tokens=None, constraints=None):
        net_input = sample["net_input"]
        if "bert_input" not in net_input:  # fairseq-interactive rebuilds net_input from the source tokens only
            net_input["bert_input"] = self.bert_input_from_tokens(net_input["src_tokens"])
        return super().inference_step(generator, models, sample, prefix_tokens=prefix_tokens,
                                      constraints=constraints)

    def bert_input_from_tokens(self, src_tokens):
        """BERT-side ids (B, T_bert) for a padded batch of NMT source tokens, tokenized on the fly."""
        rows = [utils.strip_pad(row, self.src_dict.pad()) for row in src_tokens]
        unk = self.bert_tokenizer.unk_token
        ids = [self.bert_tokenizing(source_text(self.src_dict, row, self.remove_bpe, unk)) for row in rows]
        return data_utils.collate_tokens(ids, self.bert_tokenizer.pad_token_id).to(src_tokens.device)

    def build_model(self, cfg, from_checkpoint: bool = False):
        from plugins.bert_fused.model import warm_start_from_nmt

        model = super().build_model(cfg, from_checkpoint)
        # a checkpoint being loaded (generate, interactive, hub) already holds the trained weights
        if not from_checkpoint and getattr(cfg, "warmup_from_nmt", None):
            warm_start_from_nmt(model, cfg.warmup_from_nmt)
        return model
