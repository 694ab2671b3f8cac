//! `public_ports`: the ports of a sandbox anyone may reach through its preview URL.
//! A row exists only for a public port; a sandbox that is not running opens no port
//! whatever its rows say (the preview path asks for its lease first).

use super::{Store, StoreError};

impl Store {
    /// Makes `port` of `sandbox_id` public or private again.
    pub async fn set_port_public(
        &self,
        sandbox_id: &str,
        port: u16,
        public: bool,
        now: i64,
    ) -> Result<(), StoreError> {
        let port = i64::from(port);
        with_write_pool!(self, |pool| {
            if public {
                sqlx::query(
                    "INSERT INTO public_ports (sandbox_id, port, created_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (sandbox_id, port) DO NOTHING",
                )
                .bind(sandbox_id)
                .bind(port)
                .bind(now)
                .execute(pool)
                .await?;
            } else {
                sqlx::query("DELETE FROM public_ports WHERE sandbox_id = $1 AND port = $2")
                    .bind(sandbox_id)
                    .bind(port)
                    .execute(pool)
                    .await?;
            }
        });
        Ok(())
    }

    /// The public ports of `sandbox_id`, ascending.
    pub async fn public_ports(&self, sandbox_id: &str) -> Result<Vec<u16>, StoreError> {
        let ports: Vec<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT port FROM public_ports WHERE sandbox_id = $1 ORDER BY port")
                .bind(sandbox_id)
                .fetch_all(pool)
                .await?
        });
        Ok(ports
            .into_iter()
            .filter_map(|port| u16::try_from(port).ok())
            .collect())
    }

    /// Whether `port` of `sandbox_id` is public.
    pub async fn port_is_public(&self, sandbox_id: &str, port: u16) -> Result<bool, StoreError> {
        let found: Option<i64> = with_pool!(self, |pool| {
            sqlx::query_scalar("SELECT port FROM public_ports WHERE sandbox_id = $1 AND port = $2")
                .bind(sandbox_id)
                .bind(i64::from(port))
                .fetch_optional(pool)
                .await?
        });
        Ok(found.is_some())
    }
}

#[cfg(test)]
mod tests {
    use crate::store::Store;

    #[tokio::test]
    async fn a_port_is_private_until_made_public_and_private_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_sqlite_file(&dir.path().join("berth.db"))
            .await
            .unwrap();
        assert!(!store.port_is_public("sbx-1", 8000).await.unwrap());
        store.set_port_public("sbx-1", 8000, true, 1).await.unwrap();
        // twice is the same as once
        store.set_port_public("sbx-1", 8000, true, 2).await.unwrap();
        store.set_port_public("sbx-1", 3000, true, 2).await.unwrap();
        assert!(store.port_is_public("sbx-1", 8000).await.unwrap());
        assert!(!store.port_is_public("sbx-2", 8000).await.unwrap());
        assert_eq!(store.public_ports("sbx-1").await.unwrap(), vec![3000, 8000]);
        store
            .set_port_public("sbx-1", 8000, false, 3)
            .await
            .unwrap();
        assert_eq!(store.public_ports("sbx-1").await.unwrap(), vec![3000]);
    }
}
