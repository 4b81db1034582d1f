//! The Admin service: queues, live views and KPIs for supervisors.

use std::sync::Arc;

use centralino_actors::Hub;
use centralino_actors::campaign::Campaigns;
use centralino_actors::wire::{RouterReply, RouterRequest};
use centralino_core::kpi::Counters;
use centralino_core::router::Phase;
use centralino_core::{CampaignId, CoreError, Input, QueueId};
use centralino_proto::v1 as pb;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::error::status;
use crate::unexpected;

pub struct AdminService {
    hub: Arc<Hub>,
}

impl AdminService {
    pub fn new(hub: Arc<Hub>) -> Self {
        AdminService { hub }
    }

    async fn router(&self, req: RouterRequest) -> Result<RouterReply, Status> {
        self.hub.ask_router(req).await.map_err(status)
    }

    fn campaigns(&self) -> Result<&std::sync::Arc<Campaigns>, Status> {
        self.hub.campaigns().ok_or_else(|| {
            Status::unavailable("campaigns are not available on this node yet; retry")
        })
    }
}

#[tonic::async_trait]
impl pb::admin_server::Admin for AdminService {
    #[tracing::instrument(skip_all, fields(queue = %req.get_ref().queue_id))]
    async fn upsert_queue(&self, req: Request<pb::Queue>) -> Result<Response<pb::Queue>, Status> {
        let cfg = convert::queue(req.get_ref())?;
        cfg.validate().map_err(|e| status(e.into()))?;
        let reply = convert::queue_to_pb(&cfg);
        // Stored first, so that a router that takes over later has it too.
        self.hub.cluster().save_queue(&cfg).await.map_err(status)?;
        self.router(RouterRequest::Step(Input::UpsertQueue(cfg)))
            .await?;
        Ok(Response::new(reply))
    }

    #[tracing::instrument(skip_all, fields(rules = req.get_ref().rules.len()))]
    async fn set_routing_rules(
        &self,
        req: Request<pb::RoutingRules>,
    ) -> Result<Response<pb::RoutingRules>, Status> {
        let rules = convert::routing_rules(req.get_ref())?;
        // The router checks them against the queues it has, and applies
        // them; then they are stored for a router that takes over. Setting
        // the same list again is harmless, so a failed store is retried by
        // sending the request again.
        self.router(RouterRequest::SetRules(rules.clone())).await?;
        self.hub.cluster().save_rules(&rules).await.map_err(|e| {
            Status::unavailable(format!(
                "the routing rules are in use but could not be stored for a router that takes over ({e}); send them again"
            ))
        })?;
        Ok(Response::new(convert::routing_rules_to_pb(&rules)))
    }

    async fn get_routing_rules(
        &self,
        _req: Request<pb::GetRoutingRulesRequest>,
    ) -> Result<Response<pb::RoutingRules>, Status> {
        let RouterReply::Rules(rules) = self.router(RouterRequest::Rules).await? else {
            return Err(unexpected("router"));
        };
        Ok(Response::new(convert::routing_rules_to_pb(&rules)))
    }

    async fn list_nodes(
        &self,
        _req: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        let cluster = self.hub.cluster();
        Ok(Response::new(pb::ListNodesResponse {
            node_ids: cluster.member_ids(),
            answered_by: cluster.node_id().to_owned(),
            local_customers: self.hub.local_customers().len() as u32,
            draining: self.hub.is_draining(),
        }))
    }

    #[tracing::instrument(skip_all, fields(customer = %req.get_ref().customer_id, to = %req.get_ref().to_node))]
    async fn move_customer(
        &self,
        req: Request<pb::MoveCustomerRequest>,
    ) -> Result<Response<pb::MoveCustomerResponse>, Status> {
        let req = req.into_inner();
        let customer = convert::customer_id("customer_id", &req.customer_id)?;
        if !self.hub.cluster().member_ids().contains(&req.to_node) {
            return Err(convert::invalid(
                "to_node",
                format!(
                    "{:?} is not a live node of this cluster; ListNodes gives the live ones",
                    req.to_node
                ),
            ));
        }
        if !self.hub.customer_exists(customer).await.map_err(status)? {
            return Err(Status::not_found(format!(
                "customer_id: no customer {customer}"
            )));
        }
        let pause = self
            .hub
            .migrate_customer(customer, &req.to_node)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::MoveCustomerResponse {
            pause_us: pause.as_micros() as i64,
        }))
    }

    async fn list_queues(
        &self,
        _req: Request<pb::ListQueuesRequest>,
    ) -> Result<Response<pb::ListQueuesResponse>, Status> {
        let RouterReply::Queues(views) = self.router(RouterRequest::Queues).await? else {
            return Err(unexpected("router"));
        };
        let queues = views
            .into_iter()
            .map(|v| pb::QueueView {
                queue: Some(convert::queue_to_pb(&v.config)),
                waiting: v.waiting as u32,
                oldest_wait_ms: v.oldest_wait_ms as i64,
                agents_logged_in: v.agents_logged_in as u32,
                agents_available: v.agents_available as u32,
            })
            .collect();
        Ok(Response::new(pb::ListQueuesResponse { queues }))
    }

    async fn list_agents(
        &self,
        _req: Request<pb::ListAgentsRequest>,
    ) -> Result<Response<pb::ListAgentsResponse>, Status> {
        let RouterReply::Agents(views) = self.router(RouterRequest::Agents).await? else {
            return Err(unexpected("router"));
        };
        let agents = views
            .into_iter()
            .map(|a| pb::AgentView {
                agent_id: a.id.to_string(),
                name: a.name,
                state: convert::agent_state_to_pb(a.state),
                load: a.load as u32,
                capacity: a.capacity as u32,
                skills: convert::skills_to_pb(&a.skills),
                conversation_ids: a.conversations.iter().map(ToString::to_string).collect(),
                queue_ids: a.queues.iter().map(ToString::to_string).collect(),
                resting: a.resting,
            })
            .collect();
        Ok(Response::new(pb::ListAgentsResponse { agents }))
    }

    async fn list_conversations(
        &self,
        req: Request<pb::ListConversationsRequest>,
    ) -> Result<Response<pb::ListConversationsResponse>, Status> {
        let q = req.into_inner().queue_id;
        let q = (!q.is_empty()).then(|| QueueId::new(&q));
        let RouterReply::Conversations(views) =
            self.router(RouterRequest::Conversations(q)).await?
        else {
            return Err(unexpected("router"));
        };
        let conversations = views
            .into_iter()
            .map(|v| pb::ConversationSummary {
                conversation_id: v.conversation.to_string(),
                customer_id: v.conversation.customer.to_string(),
                state: (match v.phase {
                    Phase::Scheduled | Phase::Waiting => pb::ConversationState::Queued,
                    Phase::Offered { .. } => pb::ConversationState::Offered,
                    Phase::Assigned { .. } => pb::ConversationState::Assigned,
                    Phase::WrapUp { .. } => pb::ConversationState::WrappedUp,
                }) as i32,
                channel: convert::channel_to_pb(v.channel),
                queue_id: v.queue.to_string(),
                agent_id: v.agent.map(|a| a.to_string()).unwrap_or_default(),
                waited_ms: v.waited_ms as i64,
                score_ms: v.score_ms,
            })
            .collect();
        Ok(Response::new(pb::ListConversationsResponse {
            conversations,
        }))
    }

    #[tracing::instrument(skip_all, fields(campaign = %req.get_ref().campaign_id))]
    async fn start_campaign(
        &self,
        req: Request<pb::Campaign>,
    ) -> Result<Response<pb::CampaignView>, Status> {
        self.start(req.get_ref()).await.map(Response::new)
    }

    async fn get_campaign(
        &self,
        req: Request<pb::GetCampaignRequest>,
    ) -> Result<Response<pb::CampaignView>, Status> {
        self.view(&req.get_ref().campaign_id)
            .await
            .map(Response::new)
    }

    async fn list_campaigns(
        &self,
        _req: Request<pb::ListCampaignsRequest>,
    ) -> Result<Response<pb::ListCampaignsResponse>, Status> {
        let all = self.campaigns()?.list().await.map_err(status)?;
        Ok(Response::new(pb::ListCampaignsResponse {
            campaigns: all
                .iter()
                .map(|(r, replied)| convert::campaign_view_to_pb(r, *replied))
                .collect(),
        }))
    }

    async fn get_kpis(
        &self,
        _req: Request<pb::GetKpisRequest>,
    ) -> Result<Response<pb::KpiReport>, Status> {
        let RouterReply::Kpis(report) = self.router(RouterRequest::Kpis).await? else {
            return Err(unexpected("router"));
        };
        let RouterReply::Queues(queues_waiting) = self.router(RouterRequest::Queues).await? else {
            return Err(unexpected("router"));
        };
        let waiting_of = |q: &str| {
            queues_waiting
                .iter()
                .find(|v| v.config.id.as_str() == q)
                .map_or(0, |v| v.waiting as u32)
        };
        Ok(Response::new(pb::KpiReport {
            queues: report
                .queues
                .iter()
                .map(|(k, c)| kpi(k, c, waiting_of(k)))
                .collect(),
            channels: report
                .channels
                .iter()
                .map(|(ch, c)| kpi(ch.name(), c, 0))
                .collect(),
            agents: report.agents.iter().map(|(k, c)| kpi(k, c, 0)).collect(),
            total: Some(kpi(
                "total",
                &report.total,
                queues_waiting.iter().map(|v| v.waiting as u32).sum(),
            )),
        }))
    }
}

/// Proactive outbound (the three campaign RPCs of [`AdminService`]).
impl AdminService {
    async fn start(&self, c: &pb::Campaign) -> Result<pb::CampaignView, Status> {
        let spec = convert::campaign_spec(c)?;
        if let Some(f) = &spec.follow_up {
            let RouterReply::Queues(queues) = self.router(RouterRequest::Queues).await? else {
                return Err(unexpected("router"));
            };
            if !queues.iter().any(|q| q.config.id == f.queue) {
                return Err(Status::not_found(format!(
                    "follow_up.queue_id: queue {} does not exist; define it with Admin.UpsertQueue",
                    f.queue
                )));
            }
        }
        let record = self
            .campaigns()?
            .start(&self.hub, spec)
            .await
            .map_err(status)?;
        crate::metrics::campaign_started();
        Ok(convert::campaign_view_to_pb(&record, 0))
    }

    async fn view(&self, id: &str) -> Result<pb::CampaignView, Status> {
        if id.trim().is_empty() {
            return Err(convert::invalid("campaign_id", "is required"));
        }
        let id = CampaignId::new(id.trim());
        let (record, replied) = self
            .campaigns()?
            .view(&id)
            .await
            .map_err(status)?
            .ok_or_else(|| status(CoreError::UnknownCampaign(id).into()))?;
        Ok(convert::campaign_view_to_pb(&record, replied))
    }
}

fn kpi(key: &str, c: &Counters, waiting: u32) -> pb::Kpi {
    pb::Kpi {
        key: key.to_owned(),
        offered: c.offered,
        answered: c.answered,
        answered_within_sla: c.answered_within_sla,
        abandoned: c.abandoned,
        service_level: c.service_level(),
        asa_ms: c.asa_ms(),
        aht_ms: c.aht_ms(),
        transfers: c.transfers,
        resolved: c.resolved,
        waiting,
        abandonment_rate: c.abandonment_rate(),
        transfer_rate: c.transfer_rate(),
        resolved_first_contact: c.resolved_first_contact,
        first_contact_resolution: c.first_contact_resolution(),
        busy_ms: c.busy_ms,
        staffed_ms: c.staffed_ms,
        occupancy: c.occupancy(),
    }
}
