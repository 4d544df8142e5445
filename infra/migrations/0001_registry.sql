-- Registry: communities, grids (GeoJSON polygons), cameras, responders, intake sources, users.
CREATE TABLE communities (
    community_id text PRIMARY KEY,
    name         text NOT NULL
);

CREATE TABLE grids (
    grid_id      text PRIMARY KEY,
    name         text NOT NULL,
    community_id text NOT NULL REFERENCES communities (community_id),
    polygon      jsonb NOT NULL,          -- GeoJSON Polygon, WGS-84 lon/lat
    min_lon      double precision NOT NULL,
    min_lat      double precision NOT NULL,
    max_lon      double precision NOT NULL,
    max_lat      double precision NOT NULL
);
CREATE INDEX grids_community_idx ON grids (community_id);

CREATE TABLE cameras (
    camera_id  text PRIMARY KEY,
    name       text NOT NULL,
    lon        double precision NOT NULL CHECK (lon BETWEEN -180 AND 180),
    lat        double precision NOT NULL CHECK (lat BETWEEN -90 AND 90),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE responders (
    responder_id text PRIMARY KEY,
    name         text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('police', 'grid_worker', 'volunteer')),
    org          text NOT NULL,
    skills       text[] NOT NULL DEFAULT '{}',
    on_duty      boolean NOT NULL DEFAULT true,
    grid_id      text REFERENCES grids (grid_id),
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX responders_kind_idx ON responders (kind);
CREATE INDEX responders_grid_idx ON responders (grid_id);

-- Intake sources and administrators authenticate with X-Api-Key; only a hash is stored.
CREATE TABLE api_keys (
    key_hash   text PRIMARY KEY,          -- sha256 hex of the key
    role       text NOT NULL CHECK (role IN ('camera', 'hotline', 'app', 'positions', 'admin')),
    name       text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Console users (operators, commanders). Password hashed with scrypt.
CREATE TABLE users (
    username      text PRIMARY KEY,
    display_name  text NOT NULL,
    role          text NOT NULL CHECK (role IN ('operator', 'commander', 'admin', 'viewer')),
    password_hash text NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now()
);
