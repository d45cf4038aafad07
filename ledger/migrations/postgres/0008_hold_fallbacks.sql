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
SELECT h.id, f.position, split_part(f.item, '=', 1), split_part(f.item, '=', 2)
FROM holds h,
     unnest(string_to_array(h.fallback_key_sources, ',')) WITH ORDINALITY AS f(item, position)
WHERE h.state = 'pending' AND h.fallback_key_sources IS NOT NULL AND h.fallback_key_sources <> ''
  AND strpos(f.item, '=') > 0;

ALTER TABLE holds DROP COLUMN fallback_key_sources;
