-- Photos responders take on site (处置照片), uploaded from the phone page. The id is random
-- and unguessable: it is what the photo URL carries.
CREATE TABLE photos (
    photo_id     text PRIMARY KEY,
    responder_id text NOT NULL REFERENCES responders (responder_id),
    content_type text NOT NULL CHECK (content_type IN ('image/jpeg', 'image/png', 'image/webp')),
    bytes        bytea NOT NULL CHECK (octet_length(bytes) <= 5242880),
    taken_at     timestamptz NOT NULL DEFAULT now()
);
