DROP FUNCTION ledger_batch_state(TEXT[], BIGINT, TEXT[], TEXT[]);
