-- Migration 8: the fallback providers a hold allows, one row each, instead of
-- `provider=key_source,…` packed into holds.fallback_key_sources.

CREATE TABLE hold_fallbacks (
    hold_id     TEXT NOT NULL REFERENCES holds(id),
    position    BIGINT NOT NULL,          -- 1 = the first fallback
    provider_id TEXT NOT NULL,
    key_source  TEXT NOT NULL,            -- byok | built_in
    PRIMARY KEY (hold_id, position)
);

-- Holds still pending keep their fallbacks: split the packed list.
INSERT INTO hold_fallbacks (hold_id, position, provider_id, key_source)
WITH RECURSIVE split(hold_id, position, item, rest) AS (
    SELECT id, 0, '', fallback_key_sources || ','
    FROM holds
    WHERE state = 'pending' AND fallback_key_sources IS NOT NULL AND fallback_key_sources <> ''
    UNION ALL
    SELECT hold_id, position + 1, substr(rest, 1, instr(rest, ',') - 1), substr(rest, instr(rest, ',') + 1)
    FROM split
    WHERE rest <> ''
)
SELECT hold_id, position, substr(item, 1, instr(item, '=') - 1), substr(item, instr(item, '=') + 1)
FROM split
WHERE position > 0 AND instr(item, '=') > 0;

ALTER TABLE holds DROP COLUMN fallback_key_sources;
